/* Times the mllama text decoder (families/mllama/text_decoder.h) with random weights at the
 * shapes of a config.json's text_config: computing the cross keys/values of the images' tiles,
 * a prefill that sees them, and decode steps through the KV cache. A benchmark, never a test.
 *
 *   mllama_text_bench CONFIG_JSON [--fp32] [--prompt N] [--tiles K] [--tile-tokens P]
 *                     [--decode D] [--layers L]
 *
 * Defaults: fp16, a 64-token prompt, 4 tiles (one 4-tile image) of 1601 tokens (560-pixel tiles
 * of 14-pixel patches + CLS), 16 decode steps. --layers keeps the first L layers of the stack
 * (the cross layers among them), so a large model's per-layer cost can be measured in little
 * memory. Every token of the prompt after the first sees every tile. Prints each phase's wall
 * time (decode: the fastest step, then the mean) and the device bytes of weights, KV cache and
 * cross keys/values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "families/mllama/text_decoder.h"
#include "runtime/vk_context.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const EgError *err) {
    fprintf(stderr, "mllama_text_bench: %s: %s\n", what, err ? err->msg : "bad arguments");
    exit(1);
}

static uint32_t arg_u32(const char *s) {
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > 1u << 20) die(s, NULL);
    return (uint32_t)v;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: mllama_text_bench CONFIG_JSON [options]", NULL);
    int fp32 = 0;
    uint32_t prompt = 64, tiles = 4, tile_tokens = 1601, decode = 16, layers = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--fp32"))
            fp32 = 1;
        else if (!strcmp(a, "--prompt"))
            prompt = arg_u32(v), i++;
        else if (!strcmp(a, "--tiles"))
            tiles = arg_u32(v), i++;
        else if (!strcmp(a, "--tile-tokens"))
            tile_tokens = arg_u32(v), i++;
        else if (!strcmp(a, "--decode"))
            decode = arg_u32(v), i++;
        else if (!strcmp(a, "--layers"))
            layers = arg_u32(v), i++;
        else
            die(a, NULL);
    }
    EgError err = {0};
    EgMllamaTextConfig cfg;
    if (eg_mllama_text_config_load(argv[1], &cfg, &err)) die("config", &err);
    if (layers && layers < (uint32_t)cfg.num_hidden_layers) {
        cfg.num_hidden_layers = (int)layers;
        int n = 0;
        while (n < cfg.n_cross && cfg.cross_attention_layers[n] < (int)layers)
            n++;
        cfg.n_cross = n;
    }
    EgVk vk;
    EgOps ops;
    EgStaging st;
    if (eg_vk_create(&vk, &(EgVkOptions){0}, &err) || eg_ops_init(&ops, &vk, !fp32, &err) ||
        eg_staging_init(&st, &vk, 16u << 20, &err))
        die("device", &err);
    EgTensorFile *tf = eg_tensors_random(0x5EED, &err);
    if (!tf) die("random weights", &err);
    EgMllamaText t;
    double t0 = now_s();
    if (eg_mllama_text_load(&t, &cfg, &ops, &st, tf,
                            &(EgMllamaTextOptions){.max_chunk = prompt, .max_tiles = tiles}, &err))
        die("load", &err);
    eg_tensors_close(tf);
    double t_load = now_s() - t0;
    EgMllamaTextSequence *s = eg_mllama_text_sequence_new(&t, prompt + decode, &err);
    if (!s) die("sequence", &err);
    size_t n_states = (size_t)tiles * tile_tokens * t.H;
    float *states = malloc(n_states * sizeof *states);
    int32_t *ids = malloc(prompt * sizeof *ids);
    uint8_t *mask = malloc((size_t)prompt * tiles);
    float *logits = malloc((size_t)t.vocab * sizeof *logits);
    if (!states || !ids || !mask || !logits) die("host memory", NULL);
    for (size_t i = 0; i < n_states; i++)
        states[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    for (uint32_t i = 0; i < prompt; i++) {
        ids[i] = (int32_t)((i * 7919u) % t.vocab);
        memset(mask + (size_t)i * tiles, i > 0, tiles); /* token 0: before the image */
    }
    t0 = now_s();
    if (eg_mllama_text_set_cross_states(s, states, tiles, tile_tokens, &err))
        die("cross states", &err);
    double t_cross = now_s() - t0;
    t0 = now_s();
    if (eg_mllama_text_forward(s, ids, mask, prompt, logits, 0, &err)) die("prefill", &err);
    double t_prefill = now_s() - t0, best = 1e30, sum = 0;
    for (uint32_t k = 0; k < decode; k++) {
        int32_t id = (int32_t)(k * 31u % t.vocab);
        t0 = now_s();
        if (eg_mllama_text_forward(s, &id, NULL, 1, logits, 0, &err)) die("decode", &err);
        double dt = now_s() - t0;
        sum += dt;
        if (dt < best) best = dt;
    }
    printf("device %s, %s, layers %d (%d cross), H %u, heads %u/%u kv, I %u, vocab %u\n",
           vk.props.deviceName, fp32 ? "fp32" : "fp16", cfg.num_hidden_layers, cfg.n_cross, t.H,
           t.heads, t.kv_heads, t.I, t.vocab);
    printf("load (random weights) %.2f s; weights %.1f MiB, KV cache %.1f MiB for %u tokens, "
           "cross K/V %.1f MiB for %u tiles of %u\n",
           t_load, t.weights.bytes_used / 1048576.0, s->arena.bytes_used / 1048576.0,
           prompt + decode, s->cross_arena.bytes_used / 1048576.0, tiles, tile_tokens);
    printf("cross K/V %.1f ms; prefill %u tokens %.1f ms (%.2f ms/token); decode %u steps: "
           "best %.2f ms, mean %.2f ms\n",
           t_cross * 1e3, prompt, t_prefill * 1e3, t_prefill * 1e3 / prompt, decode, best * 1e3,
           sum * 1e3 / decode);
    free(states), free(ids), free(mask), free(logits);
    eg_mllama_text_sequence_free(s);
    eg_mllama_text_free(&t);
    eg_staging_destroy(&st);
    eg_ops_destroy(&ops);
    eg_vk_destroy(&vk);
    return 0;
}
