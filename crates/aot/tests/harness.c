/* Test harness for convjit-aot objects (filled in by tests/e2e.rs).
 * Usage: harness KERNEL DIR
 * Reads DIR/input.bin (raw little-endian float32, a whole batch) and, for a
 * kernel taking weights at run time, DIR/a0.bin, DIR/a1.bin, ... (the
 * weight arrays in the header's order); runs the kernel; writes
 * DIR/output.bin. Also checks the return codes of the error paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* INCLUDES */

typedef int (*baked_fn)(const float *, float *, size_t);
typedef int (*pack_fn)(const float *const[], float *);
typedef int (*runtime_fn)(const float *, const float *, float *, size_t);

struct kernel {
    const char *name;
    baked_fn baked;
    pack_fn pack;
    runtime_fn runtime;
    size_t in_floats, out_floats, packed_floats, narrays, scratch;
};

static const struct kernel kernels[] = {
/* KERNELS */
};

/* Linked with -Wl,--wrap=malloc: the kernels' malloc comes here. */
void *__real_malloc(size_t n);
static int fail_malloc;
void *__wrap_malloc(size_t n) { return fail_malloc ? NULL : __real_malloc(n); }

static int failed;
#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,        \
                    __LINE__, #c);                                        \
            failed = 1;                                                   \
        }                                                                 \
    } while (0)

static float *read_file(const char *dir, const char *name, size_t *n) {
    char path[4096];
    FILE *f;
    long len;
    float *buf;
    sprintf(path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (float *)malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        perror(path);
        exit(2);
    }
    fclose(f);
    *n = (size_t)len / sizeof(float);
    return buf;
}

int main(int argc, char **argv) {
    const struct kernel *k = NULL;
    size_t i, n, batch;
    float *input, *output, *packed = NULL;
    const float *arrays[64];
    char path[4096];
    FILE *f;
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: %s KERNEL DIR\n", argv[0]);
        return 2;
    }
    for (i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (strcmp(kernels[i].name, argv[1]) == 0)
            k = &kernels[i];
    if (!k) {
        fprintf(stderr, "no kernel %s\n", argv[1]);
        return 2;
    }
    input = read_file(argv[2], "input.bin", &n);
    if (n % k->in_floats != 0) {
        fprintf(stderr, "input size %lu is no multiple of %lu\n", (unsigned long)n,
                (unsigned long)k->in_floats);
        return 2;
    }
    batch = n / k->in_floats;
    output = (float *)malloc(batch * k->out_floats * sizeof(float));
    /* NaN everywhere: a float the kernel does not write fails the comparison. */
    memset(output, 0xff, batch * k->out_floats * sizeof(float));
    if (k->baked) {
        CHECK(k->baked(NULL, NULL, 0) == CONVJIT_OK);
        CHECK(k->baked(NULL, output, 1) == CONVJIT_EINVAL);
        CHECK(k->baked(input, NULL, 1) == CONVJIT_EINVAL);
        if (k->scratch) {
            fail_malloc = 1;
            CHECK(k->baked(input, output, batch) == CONVJIT_ENOMEM);
            fail_malloc = 0;
        }
        rc = k->baked(input, output, batch);
    } else {
        CHECK(k->narrays <= 64);
        for (i = 0; i < k->narrays; i++) {
            char name[32];
            size_t len;
            sprintf(name, "a%lu.bin", (unsigned long)i);
            arrays[i] = read_file(argv[2], name, &len);
        }
        /* Garbage first: pack must write every float, padding included. */
        packed = (float *)malloc(k->packed_floats * sizeof(float));
        memset(packed, 0xff, k->packed_floats * sizeof(float));
        CHECK(k->pack(NULL, packed) == CONVJIT_EINVAL);
        CHECK(k->pack(arrays, NULL) == CONVJIT_EINVAL);
        if (k->narrays > 0) {
            const float *saved = arrays[k->narrays - 1];
            arrays[k->narrays - 1] = NULL;
            CHECK(k->pack(arrays, packed) == CONVJIT_EINVAL);
            arrays[k->narrays - 1] = saved;
        }
        CHECK(k->pack(arrays, packed) == CONVJIT_OK);
        for (i = 0; i < k->packed_floats; i++)
            CHECK(packed[i] == packed[i]); /* no NaN left */
        CHECK(k->runtime(NULL, NULL, NULL, 0) == CONVJIT_OK);
        CHECK(k->runtime(NULL, input, output, 1) == CONVJIT_EINVAL);
        if (k->scratch) {
            fail_malloc = 1;
            CHECK(k->runtime(packed, input, output, batch) == CONVJIT_ENOMEM);
            fail_malloc = 0;
        }
        rc = k->runtime(packed, input, output, batch);
    }
    CHECK(rc == CONVJIT_OK);
    sprintf(path, "%s/output.bin", argv[2]);
    f = fopen(path, "wb");
    if (!f || fwrite(output, sizeof(float), batch * k->out_floats, f) != batch * k->out_floats) {
        perror(path);
        return 2;
    }
    fclose(f);
    return failed;
}
