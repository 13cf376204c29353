// Next-token logits from llama.cpp's own build (the GPU rival, every layer
// offloaded), for tests/gpu.rs to hold against the exact f64 model beside
// ours. Built on the GPU machine over the rival's libllama by
// scripts/gpu-bench.sh; written for this project.
//
//   rival_logits MODEL TOKENS OUT one|batch
//
// TOKENS: little-endian u32 token ids. OUT: f32 logits, one row of n_vocab per
// token: `one` decodes token by token (the decode path), `batch` runs them
// as one batch asking for every row (the prompt path). Exit 1 with one line
// on any failure.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "llama.h"

static int fail(const char *what) {
    fprintf(stderr, "rival_logits: %s\n", what);
    return 1;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc != 5) return fail("usage: rival_logits MODEL TOKENS OUT one|batch");
    int batch_mode = argv[4][0] == 'b';
    FILE *tf = fopen(argv[2], "rb");
    if (!tf) return fail("cannot open the tokens file");
    llama_token tokens[4096];
    int n = (int)fread(tokens, sizeof(uint32_t), 4096, tf);
    fclose(tf);
    if (n <= 0) return fail("no tokens");

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 999;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return fail("cannot load the model");
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return fail("cannot create a context");
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    FILE *out = fopen(argv[3], "wb");
    if (!out) return fail("cannot write the output");
    struct llama_batch b = llama_batch_init(n, 0, 1);
    int rows = batch_mode ? n : 1;
    for (int start = 0; start < n; start += rows) {
        b.n_tokens = rows;
        for (int i = 0; i < rows; i++) {
            b.token[i] = tokens[start + i];
            b.pos[i] = start + i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = 1;
        }
        if (llama_decode(ctx, b) != 0) return fail("llama_decode failed");
        for (int i = 0; i < rows; i++) {
            const float *l = llama_get_logits_ith(ctx, i);
            if (!l || fwrite(l, sizeof(float), n_vocab, out) != (size_t)n_vocab)
                return fail("cannot read or write logits");
        }
    }
    fclose(out);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
