/* convjit ahead-of-time example: runs the MobileNet v2 inverted residual
 * block (examples/mobilenet_v2.conv) compiled by `convjit build` into k.o
 * and k.h, and compares it with a plain C loop nest. See README.md here.
 *
 * Built without --weights, the kernel takes its weights at run time: this
 * program makes some, packs them with convjitpack_...() and checks the
 * result. Built with --weights, they are inside k.o: the program just runs
 * the kernel and prints a checksum. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "k.h"

#define K(x) CONVJIT_mbv2_inverted_residual_##x
enum { H = 56, W = 56, C = 24, E = 144, BATCH = 2, RUNS = 10 };

/* Deterministic uniform numbers in [-scale, scale). */
static unsigned long long state = 42;
static void fill(float *v, size_t n, float scale) {
    size_t i;
    for (i = 0; i < n; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = scale * ((float)(state >> 40) / (float)(1 << 23) - 1.0f);
    }
}

static void *alloc(size_t floats) {
    void *p = malloc(floats * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

#ifdef CONVJIT_mbv2_inverted_residual_PACKED_FLOATS
static float relu6(double x) { return (float)(x < 0 ? 0 : x > 6 ? 6 : x); }

/* The block, written out: expand (1x1, relu6), depthwise 3x3 (pad same,
 * relu6), project (1x1) + input. Weights in TensorFlow layouts. */
static void reference(const float *in, float *out, const float *const a[6]) {
    float *t1 = (float *)alloc((size_t)H * W * E), *t2 = (float *)alloc((size_t)H * W * E);
    int p, y, x, e, c, ky, kx;
    for (p = 0; p < H * W; p++)
        for (e = 0; e < E; e++) {
            double acc = a[1][e];
            for (c = 0; c < C; c++)
                acc += (double)in[p * C + c] * a[0][c * E + e];
            t1[p * E + e] = relu6(acc);
        }
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++)
            for (e = 0; e < E; e++) {
                double acc = a[3][e];
                for (ky = 0; ky < 3; ky++)
                    for (kx = 0; kx < 3; kx++) {
                        int iy = y + ky - 1, ix = x + kx - 1;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            acc += (double)t1[(iy * W + ix) * E + e] * a[2][(ky * 3 + kx) * E + e];
                    }
                t2[(y * W + x) * E + e] = relu6(acc);
            }
    for (p = 0; p < H * W; p++)
        for (c = 0; c < C; c++) {
            double acc = a[5][c];
            for (e = 0; e < E; e++)
                acc += (double)t2[p * E + e] * a[4][e * C + c];
            out[p * C + c] = (float)acc + in[p * C + c];
        }
    free(t1);
    free(t2);
}
#endif

int main(void) {
    size_t n_in = BATCH * K(INPUT_FLOATS), n_out = BATCH * K(OUTPUT_FLOATS), i;
    float *input = (float *)alloc(n_in), *output = (float *)alloc(n_out);
    double checksum = 0;
    clock_t t0;
    int r, rc;
#ifdef CONVJIT_mbv2_inverted_residual_PACKED_FLOATS
    /* expand.weight [24][144], expand.bias, dw.weight [3][3][144][1], dw.bias,
     * project.weight [144][24], project.bias: the header's array order. */
    static const size_t len[6] = {C * E, E, 9 * E, E, E * C, C};
    static const float scale[6] = {0.2f, 0.1f, 0.33f, 0.1f, 0.083f, 0.1f};
    float *arrays[6], *packed = (float *)alloc(K(PACKED_FLOATS)), *want = (float *)alloc(n_out);
    double max_err = 0;
    for (i = 0; i < 6; i++) {
        arrays[i] = (float *)alloc(len[i]);
        fill(arrays[i], len[i], scale[i]);
    }
    if (convjitpack_mbv2_inverted_residual((const float *const *)arrays, packed) != CONVJIT_OK) {
        fprintf(stderr, "pack failed\n");
        return 1;
    }
#define RUN() convjit_mbv2_inverted_residual(packed, input, output, BATCH)
#else
#define RUN() convjit_mbv2_inverted_residual(input, output, BATCH)
#endif
    fill(input, n_in, 1.0f);
    t0 = clock();
    for (r = 0; r < RUNS; r++) {
        rc = RUN();
        if (rc != CONVJIT_OK) {
            fprintf(stderr, "kernel failed: %d\n", rc);
            return 1;
        }
    }
    printf("%d x %d images of %dx%dx%d: %.3f ms per batch\n", RUNS, BATCH, H, W, C,
           1e3 * (double)(clock() - t0) / CLOCKS_PER_SEC / RUNS);
    for (i = 0; i < n_out; i++)
        checksum += output[i];
    printf("checksum %.6f\n", checksum);
#ifdef CONVJIT_mbv2_inverted_residual_PACKED_FLOATS
    for (i = 0; i < BATCH; i++)
        reference(input + i * K(INPUT_FLOATS), want + i * K(OUTPUT_FLOATS),
                  (const float *const *)arrays);
    for (i = 0; i < n_out; i++) {
        double d = output[i] - want[i], m = want[i] < 0 ? -want[i] : want[i];
        d = (d < 0 ? -d : d) / (1 + m);
        if (!(d <= max_err)) /* NaN counts as an error */
            max_err = d == d ? d : 1e30;
    }
    printf("max relative difference from the C reference: %.2g: %s\n", max_err,
           max_err < 1e-4 ? "ok" : "MISMATCH");
    return max_err < 1e-4 ? 0 : 1;
#else
    printf("(weights are baked into k.o: no reference check)\n");
    return 0;
#endif
}
