/*
 * cpu_pool.h — the CPU backend's persistent worker pool.
 *
 * cpu_pool_run(p, n, fn, ctx) calls fn(ctx, i, tid) once for every task
 * i in [0, n), spread over the pool's threads (the calling thread is
 * thread 0 and works too), and returns when all are done. Tasks are taken
 * one by one from a shared counter, so which thread runs a task varies
 * from run to run: a task's result must depend only on i, never on tid
 * (tid only selects per-thread scratch memory).
 */
#ifndef NZ_CPU_POOL_H
#define NZ_CPU_POOL_H

#include <stdint.h>

typedef struct cpu_pool cpu_pool;
typedef void (*cpu_task_fn)(void *ctx, int64_t task, int tid);

/* nthreads >= 1 (the caller counts as one). */
int32_t cpu_pool_create(int nthreads, cpu_pool **out);
void cpu_pool_destroy(cpu_pool *p);
int cpu_pool_threads(const cpu_pool *p);
void cpu_pool_run(cpu_pool *p, int64_t ntasks, cpu_task_fn fn, void *ctx);
/* Like cpu_pool_run, where tasks [0, n_mem) are memory-bound: at most half
 * the threads run them at a time while the others take the compute tasks
 * [n_mem, ntasks), so the two kinds overlap; once the compute tasks are
 * gone every thread takes memory tasks. */
void cpu_pool_run_mixed(cpu_pool *p, int64_t n_mem, int64_t ntasks, cpu_task_fn fn, void *ctx);

/* Number of online processors (at least 1). */
int cpu_online_cores(void);

#endif /* NZ_CPU_POOL_H */
