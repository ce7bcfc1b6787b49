/*
 * A fake NVIDIA driver library (libcuda.so.1) for testing `worker-runtime cuda-check` on machines
 * without a GPU. The tests compile it with `cc -shared -fPIC` and put its directory on
 * LD_LIBRARY_PATH; the runtime then loads it exactly as it loads the real driver.
 *
 * It exports the driver entry points the check calls, with cuda.h's signatures, and behaves as
 * the environment says (read at each call):
 *
 *   FAKE_CUDA_DRIVER_VERSION  CUDA version the "driver" supports, e.g. 12080 (default 13000)
 *   FAKE_CUDA_INIT_RESULT     status cuInit returns, e.g. 100 = no device (default 0)
 *   FAKE_CUDA_INIT_SLEEP      seconds cuInit blocks first (a hung driver)
 *   FAKE_CUDA_DEVICES         "name,major.minor,total_mib,free_mib;..." (default: one H200;
 *                             empty: zero devices)
 *   FAKE_CUDA_CTX_RESULT      status cuDevicePrimaryCtxRetain returns (default 0)
 *   FAKE_CUDA_MODULE_RESULT   status cuModuleLoadDataEx returns, with a JIT log (default 0)
 *   FAKE_CUDA_LAUNCH_RESULT   status cuLaunchKernel returns (default 0)
 *   FAKE_CUDA_CORRUPT_INDEX   index of one output value the "GPU" gets wrong
 *
 * Built with -DFAKE_OMIT_LAUNCH it lacks cuLaunchKernel, like a broken or ancient driver.
 *
 * The "device" memory is host memory, and the kernel is the check's PTX kernel
 * (`out[i] = (in[i] * 3 + 7) ^ i`) written in C, run only over the threads actually launched,
 * so a wrong grid in the runtime shows up as wrong values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;

#define MAX_DEVICES 8

struct device {
    char name[128];
    int major, minor;
    size_t total, free;
};

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return (v && *v) ? atoi(v) : fallback;
}

/* Parses FAKE_CUDA_DEVICES into `out`; returns the count. */
static int devices(struct device *out) {
    const char *spec = getenv("FAKE_CUDA_DEVICES");
    if (!spec) spec = "NVIDIA H200,9.0,143771,143200";
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ";", &save); item && n < MAX_DEVICES;
         item = strtok_r(NULL, ";", &save)) {
        char name[128] = {0};
        int major = 0, minor = 0;
        unsigned long total = 0, free_mib = 0;
        if (sscanf(item, "%127[^,],%d.%d,%lu,%lu", name, &major, &minor, &total, &free_mib) != 5)
            continue;
        snprintf(out[n].name, sizeof out[n].name, "%s", name);
        out[n].major = major;
        out[n].minor = minor;
        out[n].total = (size_t)total << 20;
        out[n].free = (size_t)free_mib << 20;
        n++;
    }
    return n;
}

static int initialized = 0;
static int current = -1;

CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) {
    case 0: *s = "CUDA_SUCCESS"; return 0;
    case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 3: *s = "CUDA_ERROR_NOT_INITIALIZED"; return 0;
    case 34: *s = "CUDA_ERROR_STUB_LIBRARY"; return 0;
    case 35: *s = "CUDA_ERROR_INSUFFICIENT_DRIVER"; return 0;
    case 46: *s = "CUDA_ERROR_DEVICES_UNAVAILABLE"; return 0;
    case 100: *s = "CUDA_ERROR_NO_DEVICE"; return 0;
    case 101: *s = "CUDA_ERROR_INVALID_DEVICE"; return 0;
    case 209: *s = "CUDA_ERROR_NO_BINARY_FOR_GPU"; return 0;
    case 218: *s = "CUDA_ERROR_INVALID_PTX"; return 0;
    case 222: *s = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"; return 0;
    case 500: *s = "CUDA_ERROR_NOT_FOUND"; return 0;
    case 719: *s = "CUDA_ERROR_LAUNCH_FAILED"; return 0;
    case 803: *s = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"; return 0;
    default: *s = NULL; return 1; /* CUDA_ERROR_INVALID_VALUE, as the real driver does */
    }
}

CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case 0: *s = "no error"; return 0;
    case 2: *s = "out of memory"; return 0;
    case 34: *s = "CUDA driver is a stub library"; return 0;
    case 35: *s = "CUDA driver version is insufficient for CUDA runtime version"; return 0;
    case 46: *s = "CUDA-capable device(s) is/are busy or unavailable"; return 0;
    case 100: *s = "no CUDA-capable device is detected"; return 0;
    case 209: *s = "no kernel image is available for execution on the device"; return 0;
    case 218: *s = "a PTX JIT compilation failed"; return 0;
    case 719: *s = "unspecified launch failure"; return 0;
    default: return cuGetErrorName(e, s);
    }
}

CUresult cuDriverGetVersion(int *v) {
    *v = env_int("FAKE_CUDA_DRIVER_VERSION", 13000);
    return 0;
}

CUresult cuInit(unsigned int flags) {
    (void)flags;
    int nap = env_int("FAKE_CUDA_INIT_SLEEP", 0);
    if (nap > 0) sleep((unsigned)nap);
    CUresult r = env_int("FAKE_CUDA_INIT_RESULT", 0);
    if (r == 0) initialized = 1;
    return r;
}

CUresult cuDeviceGetCount(int *n) {
    struct device d[MAX_DEVICES];
    if (!initialized) return 3;
    *n = devices(d);
    return 0;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
    struct device d[MAX_DEVICES];
    if (!initialized) return 3;
    if (ordinal < 0 || ordinal >= devices(d)) return 101;
    *dev = ordinal;
    return 0;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    struct device d[MAX_DEVICES];
    if (dev < 0 || dev >= devices(d)) return 101;
    snprintf(name, (size_t)len, "%s", d[dev].name);
    return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice dev) {
    struct device d[MAX_DEVICES];
    if (dev < 0 || dev >= devices(d)) return 101;
    if (attr == 75) *v = d[dev].major;
    else if (attr == 76) *v = d[dev].minor;
    else *v = 0;
    return 0;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    struct device d[MAX_DEVICES];
    if (dev < 0 || dev >= devices(d)) return 101;
    *bytes = d[dev].total;
    return 0;
}

static int contexts[MAX_DEVICES];

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    CUresult r = env_int("FAKE_CUDA_CTX_RESULT", 0);
    if (r) return r;
    if (dev < 0 || dev >= MAX_DEVICES) return 101;
    contexts[dev]++;
    *ctx = &contexts[dev];
    return 0;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    if (dev < 0 || dev >= MAX_DEVICES || contexts[dev] == 0) return 201;
    contexts[dev]--;
    return 0;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
    current = ctx ? (int)((int *)ctx - contexts) : -1;
    return 0;
}

CUresult cuCtxSynchronize(void) { return current < 0 ? 201 : 0; }

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    struct device d[MAX_DEVICES];
    if (current < 0 || current >= devices(d)) return 201;
    *free_bytes = d[current].free;
    *total = d[current].total;
    return 0;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    if (current < 0) return 201;
    void *m = malloc(bytes);
    if (!m) return 2;
    *p = (CUdeviceptr)(uintptr_t)m;
    return 0;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    free((void *)(uintptr_t)p);
    return 0;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    memcpy((void *)(uintptr_t)dst, src, n);
    return 0;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return 0;
}

static int module_token, function_token;

CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n, int *options,
                            void **values) {
    CUresult r = env_int("FAKE_CUDA_MODULE_RESULT", 0);
    if (r) {
        /* Like the driver, write the JIT's complaint into the caller's log buffer. */
        for (unsigned int i = 0; i < n; i++) {
            if (options[i] != 5) continue; /* CU_JIT_ERROR_LOG_BUFFER */
            for (unsigned int j = 0; j < n; j++) {
                if (options[j] == 6) { /* CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES */
                    size_t size = (size_t)(uintptr_t)values[j];
                    snprintf((char *)values[i], size, "ptxas fatal   : fake JIT failure");
                }
            }
        }
        return r;
    }
    if (!strstr((const char *)image, ".entry sdw_check")) return 218;
    *m = &module_token;
    return 0;
}

CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    if (m != &module_token || strcmp(name, "sdw_check") != 0) return 500;
    *f = &function_token;
    return 0;
}

CUresult cuModuleUnload(CUmodule m) { return m == &module_token ? 0 : 400; }

#ifndef FAKE_OMIT_LAUNCH
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                        CUstream stream, void **params, void **extra) {
    (void)gy; (void)gz; (void)by; (void)bz; (void)shared; (void)stream; (void)extra;
    if (f != &function_token) return 400;
    CUresult r = env_int("FAKE_CUDA_LAUNCH_RESULT", 0);
    if (r) return r;
    const uint32_t *in = (const uint32_t *)(uintptr_t) * (CUdeviceptr *)params[0];
    uint32_t *out = (uint32_t *)(uintptr_t) * (CUdeviceptr *)params[1];
    uint32_t n = *(uint32_t *)params[2];
    uint64_t threads = (uint64_t)gx * bx;
    for (uint32_t i = 0; i < n && i < threads; i++) out[i] = (in[i] * 3u + 7u) ^ i;
    const char *corrupt = getenv("FAKE_CUDA_CORRUPT_INDEX");
    if (corrupt && *corrupt) {
        uint32_t at = (uint32_t)strtoul(corrupt, NULL, 10);
        if (at < n) out[at] ^= 0x40u;
    }
    return 0;
}
#endif
