/* `egret serve` as a process (the built binary, on the bundled demo model, on 127.0.0.1):
 * - a flood of connections past a low descriptor limit (silent ones, and ones that speak HTTP/2
 *   and then idle): health answers during it or within 10 s after it, and so does Generate;
 * - a connection that never sends the HTTP/2 preface is closed after the handshake timeout;
 * - SIGTERM with a stream in flight: the process exits soon after the grace period ends, the
 *   call ends with UNAVAILABLE and the exit code is 0. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "runtime/clock.h"
#include "test_util.h"
#include "tools/grpc_client.h"

static char egret_bin[PATH_MAX];
static unsigned char *image;
static size_t image_len;

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

typedef struct Proc {
    pid_t pid;
    char addr[64];
    char log[128];
} Proc;

/* Starts `egret serve --listen 127.0.0.1:PORT ARGS...` with descriptor limit nofile (0: as is),
 * its stderr in a file. */
static int spawn(Proc *p, rlim_t nofile, const char *const *args) {
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", free_port());
    snprintf(p->log, sizeof p->log, "/tmp/egret-test-%d-serve-%s.log", (int)getpid(), p->addr + 10);
    /* no warm-up: these tests are about processes and signals (test_warmup covers it) */
    const char *argv[32] = {egret_bin, "serve", "--no-warmup", "--listen", p->addr};
    int n = 5;
    for (; args && *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    p->pid = fork();
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* no server left over if the test dies */
        int log = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(log, 2);
        if (nofile) {
            struct rlimit rl = {nofile, nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        execv(egret_bin, (char *const *)argv);
        _exit(127);
    }
    CHECK(p->pid > 0, "fork: %s", strerror(errno));
    return p->pid > 0 ? 0 : -1;
}

static void print_log(const Proc *p) {
    size_t len = 0;
    unsigned char *text = test_read_file(p->log, &len);
    fprintf(stderr, "---- %s ----\n%.*s----\n", p->log, (int)(len > 8000 ? 8000 : len),
            text ? (const char *)text + (len > 8000 ? len - 8000 : 0) : "");
    free(text);
}

/* Reaps the server within timeout_s; -1 if it is still running (then it is killed). */
static int reap(Proc *p, double timeout_s, int *status) {
    double end = eg_now_s() + timeout_s;
    for (;;) {
        pid_t r = waitpid(p->pid, status, WNOHANG);
        if (r == p->pid) return 0;
        if (eg_now_s() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, status, 0);
            return -1;
        }
        usleep(5000);
    }
}

static void stop(Proc *p) {
    int status;
    kill(p->pid, SIGINT);
    kill(p->pid, SIGINT); /* the second cancels at once */
    reap(p, 30, &status);
    unlink(p->log);
}

static int read_health(void *user, const uint8_t *data, size_t len) {
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, len, data);
    *(int *)user = r ? (int)r->status : -1;
    if (r) grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return 0;
}

/* One health Check on a new channel (no reconnect backoff carried over): 1 when SERVING. */
static int healthy(const char *addr, double timeout_s) {
    EgError err = {0};
    EgClient *c = eg_client_connect(addr, &(EgClientOptions){0}, &err);
    if (!c) return 0;
    EgCallStatus st = {0};
    int status = -1;
    int rc = eg_client_call(c, "/grpc.health.v1.Health/Check", NULL, 0, timeout_s, read_health,
                            &status, &st, &err);
    eg_client_close(c);
    return rc == 0 && st.code == GRPC_STATUS_OK &&
           status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

/* Seconds until health answers SERVING, or -1 after timeout_s. */
static double wait_healthy(const char *addr, double timeout_s) {
    double t0 = eg_now_s();
    while (eg_now_s() - t0 < timeout_s) {
        if (healthy(addr, 2)) return eg_now_s() - t0;
        usleep(100 * 1000);
    }
    return -1;
}

static EgRequest caption_request(EgRequestPart *part, uint32_t max_new) {
    *part = (EgRequestPart){.is_image = 1, .image = image, .image_len = image_len};
    EgRequest req = {.parts = part, .n_parts = 1, .gen = {.max_new_tokens = max_new}};
    eg_sampling_params_default(&req.gen.sampling);
    return req;
}

/* A Generate of a few tokens on a new channel: 1 when it answers OK. */
static int generates(const char *addr) {
    EgError err = {0};
    EgClient *c = eg_client_connect(addr, &(EgClientOptions){0}, &err);
    if (!c) return 0;
    EgRequestPart part;
    EgRequest req = caption_request(&part, 4);
    EgClientAnswer a = {0};
    EgCallStatus st = {0};
    int rc = eg_client_generate(c, &req, 0, 30, NULL, NULL, &a, &st, &err);
    eg_client_close(c);
    int ok = rc == 0 && st.code == GRPC_STATUS_OK && a.generated_tokens > 0;
    if (!ok) fprintf(stderr, "Generate: rc %d status %d %s %s\n", rc, st.code, st.message, err.msg);
    eg_client_answer_free(&a);
    return ok;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The client preface and an empty SETTINGS frame: what an HTTP/2 client sends first. */
static void speak_http2(int fd) {
    static const char hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    ssize_t n = send(fd, hello, sizeof hello - 1, MSG_NOSIGNAL);
    (void)n;
}

#define FLOOD 300      /* connections per flood: well past the server's limit */
#define NOFILE 128     /* the server's descriptor limit */
#define RECOVER_S 10.0 /* health must answer again within this after a flood */

/* Opens FLOOD connections (speaking HTTP/2 or silent) and keeps them open: returns how many
 * connected. */
static int flood(int port, int speak, int *fds) {
    int opened = 0;
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = connect_to(port);
        if (fds[i] < 0) continue;
        opened++;
        if (speak) speak_http2(fds[i]);
    }
    return opened;
}

static void close_all(int *fds) {
    for (int i = 0; i < FLOOD; i++)
        if (fds[i] >= 0) close(fds[i]);
}

static void test_flood(void) {
    Proc p;
    /* The handshake timeout is left long: silent connections are not closed for it here. */
    if (spawn(&p, NOFILE, NULL)) return;
    int port = atoi(strchr(p.addr, ':') + 1);
    double t = wait_healthy(p.addr, 120);
    CHECK(t >= 0, "egret serve (descriptor limit %d) never answered health", NOFILE);
    if (t < 0) {
        print_log(&p);
        stop(&p);
        return;
    }
    int fds[FLOOD];

    /* Silent connections: each newcomer makes room by closing the oldest that has not spoken,
     * so health answers during the flood. */
    int opened = flood(port, 0, fds);
    usleep(300 * 1000); /* the server has taken them all in */
    double during = wait_healthy(p.addr, RECOVER_S);
    CHECK(during >= 0, "health during a flood of %d silent connections: no answer in %.0f s",
          opened, RECOVER_S);
    close_all(fds);
    double after = wait_healthy(p.addr, RECOVER_S);
    CHECK(after >= 0, "health after the silent flood: no answer in %.0f s", RECOVER_S);
    fprintf(stderr,
            "silent flood: %d connections opened (server limit %d descriptors); health "
            "answered during it in %.2f s, after it in %.2f s\n",
            opened, NOFILE, during, after);

    /* Connections that speak HTTP/2 and then idle: past the cap the newest are closed; once
     * they are gone the server serves again. */
    opened = flood(port, 1, fds);
    usleep(300 * 1000);
    int during_ok = healthy(p.addr, 2);
    close_all(fds);
    double t0 = eg_now_s();
    after = wait_healthy(p.addr, RECOVER_S);
    CHECK(after >= 0, "health after a flood of %d idle HTTP/2 connections: no answer in %.0f s",
          opened, RECOVER_S);
    CHECK(generates(p.addr), "Generate after the floods");
    fprintf(stderr,
            "HTTP/2 flood: %d connections opened; health during it: %s; served again "
            "%.2f s after they closed (Generate too, by %.2f s)\n",
            opened, during_ok ? "answered" : "refused", after, eg_now_s() - t0);

    size_t len = 0;
    char *log = (char *)test_read_file(p.log, &len);
    CHECK(log && strstr(log, "egret: descriptor limit 128"), "no descriptor limit line");
    CHECK(log && strstr(log, "at the limit"), "no line about connections closed at the limit");
    if (test_checks_failed) print_log(&p);
    free(log);
    stop(&p);
}

/* Whether the server closes the connection within timeout_s (what it sends, such as its
 * SETTINGS frame, is read and dropped). */
static int closed_by_peer(int fd, double timeout_s) {
    double end = eg_now_s() + timeout_s;
    for (;;) {
        double left = end - eg_now_s();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) return 0;
        char b[512];
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return 1;
    }
}

static void test_handshake_timeout(void) {
    Proc p;
    const char *args[] = {"--handshake-timeout", "1", NULL};
    if (spawn(&p, 0, args)) return;
    int port = atoi(strchr(p.addr, ':') + 1);
    if (wait_healthy(p.addr, 120) < 0) {
        CHECK(0, "egret serve --handshake-timeout 1 never answered health");
        print_log(&p);
        stop(&p);
        return;
    }
    int silent = connect_to(port), talker = connect_to(port);
    double t0 = eg_now_s();
    speak_http2(talker);
    CHECK(!closed_by_peer(silent, 0.5), "a silent connection closed within 0.5 s");
    CHECK(closed_by_peer(silent, 6),
          "a silent connection still open %.1f s after connecting "
          "(handshake timeout 1 s)",
          eg_now_s() - t0);
    double closed_after = eg_now_s() - t0;
    /* One that sent the preface is past the handshake: it stays. */
    CHECK(!closed_by_peer(talker, 0.1), "a connection that sent the preface was closed");
    fprintf(stderr, "handshake timeout 1 s: a silent connection was closed after %.2f s\n",
            closed_after);
    close(silent);
    close(talker);
    CHECK(healthy(p.addr, 10), "health after the handshake timeout");
    stop(&p);
}

typedef struct Stream {
    const char *addr;
    atomic_int first;
    EgClientAnswer a;
    EgCallStatus st;
    int rc;
    pthread_t thread;
} Stream;

static int on_text(void *user, const char *text, size_t len) {
    (void)text;
    (void)len;
    atomic_store(&((Stream *)user)->first, 1);
    return 0;
}

static void *stream_thread(void *arg) {
    Stream *s = arg;
    EgError err = {0};
    EgClient *c = eg_client_connect(s->addr, &(EgClientOptions){0}, &err);
    if (!c) return NULL;
    EgRequestPart part;
    EgRequest req = caption_request(&part, 1024);
    req.gen.ignore_eos = 1;
    s->rc = eg_client_generate(c, &req, 1, 120, on_text, s, &s->a, &s->st, &err);
    eg_client_close(c);
    return NULL;
}

#define GRACE_S 1.0
#ifdef __SANITIZE_ADDRESS__
/* Tearing down (Vulkan, gRPC) and the leak scan take seconds more under the sanitizers. */
#define EXIT_BOUND_S 4.0
#else
#define EXIT_BOUND_S 1.5 /* after the grace period */
#endif

static void test_shutdown(void) {
    Proc p;
    /* 1024 tokens take several seconds on any device: the stream outlives the grace period */
    const char *args[] = {"--grace", "1", NULL};
#ifdef __SANITIZE_ADDRESS__
    /* 128 bytes allocated in libstdc++ are reported lost at exit after a drain that cancels a
     * stream (as before this test existed), which would turn the exit code checked here into 1;
     * test_server checks the server's own memory. */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
#endif
    int spawned = spawn(&p, 0, args);
#ifdef __SANITIZE_ADDRESS__
    unsetenv("ASAN_OPTIONS");
#endif
    if (spawned) return;
    if (wait_healthy(p.addr, 120) < 0) {
        CHECK(0, "egret serve never answered health");
        print_log(&p);
        stop(&p);
        return;
    }
    /* Connections that stay open with no call: a client channel, and one that said its HTTP/2
     * preface and then nothing (it never answers the GOAWAY's ping nor hangs up). Waiting for
     * them to hang up after the GOAWAY kept the process alive seconds past the grace period. */
    EgError err = {0};
    EgClient *idle = eg_client_connect(p.addr, &(EgClientOptions){0}, &err);
    EgCallStatus st = {0};
    int status_seen = -1;
    CHECK(idle && eg_client_call(idle, "/grpc.health.v1.Health/Check", NULL, 0, 10, read_health,
                                 &status_seen, &st, &err) == 0,
          "health on the idle channel: %s", err.msg);
    int mute = connect_to(atoi(strchr(p.addr, ':') + 1));
    speak_http2(mute);
    Stream s = {.addr = p.addr, .rc = -1};
    pthread_create(&s.thread, NULL, stream_thread, &s);
    for (int i = 0; i < 6000 && !atomic_load(&s.first); i++)
        usleep(10 * 1000);
    CHECK(atomic_load(&s.first), "the stream never started");
    double t0 = eg_now_s();
    kill(p.pid, SIGTERM);
    int status = 0;
    int reaped = reap(&p, GRACE_S + 30, &status) == 0;
    double exited = eg_now_s() - t0;
    pthread_join(s.thread, NULL);
    CHECK(reaped, "egret serve still running 30 s after its grace period");
    CHECK(exited <= GRACE_S + EXIT_BOUND_S,
          "egret serve exited %.2f s after SIGTERM (grace %.1f s, bound %.1f s after it)", exited,
          GRACE_S, EXIT_BOUND_S);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    CHECK(s.rc == 0 && s.st.code == GRPC_STATUS_UNAVAILABLE,
          "the stream in flight ended with rc %d, status %d (%s) after %u tokens", s.rc,
          (int)s.st.code, s.st.message, s.a.generated_tokens);
    fprintf(stderr,
            "shutdown: exited %.2f s after SIGTERM with grace %.1f s; the stream ended "
            "%s after %zu messages\n",
            exited, GRACE_S, s.st.code == GRPC_STATUS_UNAVAILABLE ? "UNAVAILABLE" : "otherwise",
            s.a.n_messages);
    if (test_checks_failed) print_log(&p);
    eg_client_answer_free(&s.a);
    eg_client_close(idle);
    close(mute);
    unlink(p.log);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    snprintf(egret_bin, sizeof egret_bin, "%s", test_egret_binary());
    if (access(egret_bin, X_OK) != 0) {
        fprintf(stderr, "no egret binary at %s (set EGRET_BIN)\n", egret_bin);
        return 1;
    }
    image = test_read_file("examples/scene-002.png", &image_len);
    REQUIRE(image != NULL, "examples/scene-002.png");
    test_flood();
    test_handshake_timeout();
    test_shutdown();
    free(image);
    return test_finish();
}
