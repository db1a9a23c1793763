/* The cost of legacy-SSE scalar instructions right after a 256-bit AVX instruction.
 *
 * Built and run by bench/bench_tbe_backward.py (cc -O2). FBGEMM's JIT row-wise AdaGrad kernel
 * mixes 256-bit AVX (the row's vector math) with legacy-SSE scalar instructions (movss,
 * addss, divss, sqrtss: the row's sum of squares, its AdaGrad state) and no vzeroupper in
 * between. Each loop below runs one vmulps on ymm registers and then two scalar
 * instructions: legacy SSE, the same after a vzeroupper, and their VEX forms. Where the first
 * costs far more than the other two, the CPU (or the hypervisor under it) charges a
 * transition for SSE code with a dirty upper register state, and every row that kernel
 * updates pays it several times. Prints ns per iteration of each loop.
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const long n = 2000000;
  double t0 = now();
  for (long i = 0; i < n; i++)
    __asm__ volatile("vmulps %%ymm2, %%ymm2, %%ymm3\n\t"
                     "addss %%xmm1, %%xmm0\n\t"
                     "movss %%xmm0, %%xmm1\n\t" ::: "xmm0", "xmm1", "xmm2", "xmm3");
  double t1 = now();
  for (long i = 0; i < n; i++)
    __asm__ volatile("vmulps %%ymm2, %%ymm2, %%ymm3\n\t"
                     "vzeroupper\n\t"
                     "addss %%xmm1, %%xmm0\n\t"
                     "movss %%xmm0, %%xmm1\n\t" ::: "xmm0", "xmm1", "xmm2", "xmm3");
  double t2 = now();
  for (long i = 0; i < n; i++)
    __asm__ volatile("vmulps %%ymm2, %%ymm2, %%ymm3\n\t"
                     "vaddss %%xmm1, %%xmm0, %%xmm0\n\t"
                     "vmovss %%xmm0, %%xmm1, %%xmm1\n\t" ::: "xmm0", "xmm1", "xmm2", "xmm3");
  double t3 = now();
  printf("legacy SSE %.1f ns/iteration, with vzeroupper first %.1f, VEX-encoded %.1f\n",
         (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9, (t3 - t2) / n * 1e9);
  return 0;
}
