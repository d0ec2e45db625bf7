#include "server/example_set_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/grpc_log_escape.h"
#include "server/proto_request.h"

enum { HEADER_BYTES = 12 };

/* Set files are the pairs of a request, which max_request_bytes bounds; this bounds what a
 * stray large file in DIR costs to look at. */
#define MAX_FILE_BYTES ((size_t)1 << 30)

int eg_example_set_file_parse(const uint8_t *data, size_t len, const uint8_t **msg, size_t *msg_len,
                              EgError *err) {
    size_t magic = strlen(EG_EXAMPLE_SET_FILE_MAGIC);
    if (len < HEADER_BYTES || memcmp(data, EG_EXAMPLE_SET_FILE_MAGIC, magic) != 0)
        return eg_fail(err, "not an example set file (no %s header)", EG_EXAMPLE_SET_FILE_MAGIC);
    uint32_t version = (uint32_t)data[8] | (uint32_t)data[9] << 8 | (uint32_t)data[10] << 16 |
                       (uint32_t)data[11] << 24;
    if (version != EG_EXAMPLE_SET_FILE_VERSION)
        return eg_fail(err, "example set file version %u; this build reads version %u", version,
                       EG_EXAMPLE_SET_FILE_VERSION);
    *msg = data + HEADER_BYTES;
    *msg_len = len - HEADER_BYTES;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int eg_example_set_store_save(const char *dir, const char *id, const EgRequestExample *pairs,
                              size_t n, const char *template_name, EgError *err) {
    uint8_t *msg = NULL;
    size_t len = 0;
    if (eg_proto_example_set_encode(pairs, n, template_name, &msg, &len, err)) return -1;
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/%s%s", dir, id, EG_EXAMPLE_SET_FILE_SUFFIX);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", dir, id, (long)getpid());
    uint8_t header[HEADER_BYTES];
    memcpy(header, EG_EXAMPLE_SET_FILE_MAGIC, 8);
    for (int i = 0; i < 4; i++)
        header[8 + i] = (uint8_t)(EG_EXAMPLE_SET_FILE_VERSION >> (8 * i));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 || write_all(fd, header, sizeof header) || write_all(fd, msg, len) || fsync(fd)
                 ? -1
                 : 0;
    int saved = errno;
    if (fd >= 0 && close(fd) && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && rename(tmp, path)) {
        rc = -1;
        saved = errno;
    }
    free(msg);
    if (rc) {
        unlink(tmp);
        return eg_fail(err, "cannot write %s: %s", path, strerror(saved));
    }
    /* the rename itself reaches the disk with the directory */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int eg_example_set_store_remove(const char *dir, const char *id, EgError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s", dir, id, EG_EXAMPLE_SET_FILE_SUFFIX);
    if (unlink(path) && errno != ENOENT)
        return eg_fail(err, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len, EgError *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        eg_fail(err, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t *data = NULL;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_FILE_BYTES) {
        eg_fail(err, "not a regular file of at most %zu bytes", MAX_FILE_BYTES);
    } else if (!(data = malloc((size_t)st.st_size + 1))) {
        eg_fail(err, "out of host memory");
    } else if (fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        eg_fail(err, "cannot read: %s", strerror(errno));
        free(data);
        data = NULL;
    }
    *len = data ? (size_t)st.st_size : 0;
    fclose(f);
    return data;
}

/* Registers one file; -1 with err saying why it was skipped. */
static int load_one(const char *path, const char *expect_id, EgEngine *e, EgError *err) {
    size_t len;
    uint8_t *data = read_file(path, &len, err);
    if (!data) return -1;
    const uint8_t *msg;
    size_t msg_len;
    EgProtoExampleSet set;
    int rc = -1;
    if (eg_example_set_file_parse(data, len, &msg, &msg_len, err) == 0 &&
        eg_proto_example_set_decode(msg, msg_len, &set, err) == EG_STATUS_OK) {
        EgExampleSetInfo info;
        int created;
        rc = eg_engine_example_set_create(e, set.pairs, set.n_pairs, set.template_name, expect_id,
                                          &info, &created, err) == EG_STATUS_OK
                 ? 0
                 : -1;
        eg_proto_example_set_free(&set);
    }
    free(data);
    return rc;
}

int eg_example_set_store_load(const char *dir, EgEngine *e, FILE *log,
                              void (*on_loaded)(void *user, const char *id), void *user,
                              EgError *err) {
    DIR *d = opendir(dir);
    if (!d)
        return eg_fail(err, "cannot read the example sets directory %s: %s", dir, strerror(errno));
    size_t suffix = strlen(EG_EXAMPLE_SET_FILE_SUFFIX);
    int loaded = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        const char *name = ent->d_name;
        size_t len = strlen(name);
        if (name[0] == '.' || len <= suffix ||
            strcmp(name + len - suffix, EG_EXAMPLE_SET_FILE_SUFFIX) != 0)
            continue; /* not ours (temporary files start with a dot) */
        char path[4096], id[EG_EXAMPLE_SET_ID_LEN + 1] = "";
        snprintf(path, sizeof path, "%s/%s", dir, name);
        EgError why = {0};
        int rc = -1;
        if (len - suffix != EG_EXAMPLE_SET_ID_LEN) {
            eg_fail(&why, "its name is not an example set id");
        } else {
            memcpy(id, name, EG_EXAMPLE_SET_ID_LEN);
            rc = load_one(path, id, e, &why);
        }
        if (rc) {
            char shown[EG_LOG_FIELD_MAX], reason[EG_LOG_FIELD_MAX];
            eg_log_escape_str(shown, sizeof shown, path);
            eg_log_escape_str(reason, sizeof reason, why.msg);
            fprintf(log, "egret: warning: skipping example set file %s: %s\n", shown, reason);
            continue;
        }
        loaded++;
        if (on_loaded) on_loaded(user, id);
    }
    closedir(d);
    return loaded;
}
