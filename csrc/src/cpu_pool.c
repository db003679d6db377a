/*
 * cpu_pool.c — persistent worker threads that wait on a futex between jobs
 * (after a short spin, so the many small jobs of one step do not pay a
 * sleep/wake each).
 */
#include "cpu_pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <immintrin.h>

#include "common.h"

/* Spin iterations (each a pause) before a waiting thread sleeps. */
#define SPIN_ITERS 4000

struct cpu_pool {
	int n; /* threads including the caller */
	pthread_t *th;
	int started; /* workers actually started */

	/* the current job */
	cpu_task_fn fn;
	void *ctx;
	int64_t ntasks;
	_Atomic int64_t next;

	_Atomic uint32_t gen;     /* futex: bumped to start a job */
	_Atomic uint32_t done;    /* futex: set to gen when the last worker finishes */
	_Atomic int32_t active;   /* workers still busy with the current job */
	_Atomic int32_t sleepers; /* workers blocked in futex_wait on gen */
	_Atomic int32_t main_waiting; /* the caller is blocked in futex_wait on done */
	_Atomic int stop;
};

typedef struct worker_arg {
	cpu_pool *p;
	int tid;
} worker_arg;

static long futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static void run_tasks(cpu_pool *p, int tid)
{
	for (;;) {
		int64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
		if (i >= p->ntasks)
			break;
		p->fn(p->ctx, i, tid);
	}
}

static void *worker_main(void *arg)
{
	cpu_pool *p = ((worker_arg *)arg)->p;
	int tid = ((worker_arg *)arg)->tid;
	nz_free(arg);
	uint32_t seen = 0;
	for (;;) {
		uint32_t g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (spins < SPIN_ITERS) {
				_mm_pause();
				spins++;
				continue;
			}
			atomic_fetch_add(&p->sleepers, 1);
			if (atomic_load(&p->gen) == seen)
				futex(&p->gen, FUTEX_WAIT_PRIVATE, seen);
			atomic_fetch_sub(&p->sleepers, 1);
		}
		seen = g;
		if (atomic_load_explicit(&p->stop, memory_order_acquire))
			break;
		run_tasks(p, tid);
		if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
			atomic_store(&p->done, g);
			if (atomic_load(&p->main_waiting))
				futex(&p->done, FUTEX_WAKE_PRIVATE, 1);
		}
	}
	return NULL;
}

int cpu_online_cores(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (int)n;
}

int32_t cpu_pool_create(int nthreads, cpu_pool **out)
{
	*out = NULL;
	cpu_pool *p = nz_calloc(sizeof *p);
	if (!p)
		return nz_oom("thread pool", sizeof *p);
	p->n = nthreads < 1 ? 1 : nthreads;
	if (p->n > 1) {
		p->th = nz_calloc(sizeof(pthread_t) * (size_t)p->n);
		if (!p->th) {
			nz_free(p);
			return nz_oom("thread pool", sizeof(pthread_t) * (size_t)p->n);
		}
	}
	for (int t = 1; t < p->n; t++) {
		worker_arg *wa = nz_alloc(sizeof *wa);
		int rc = wa ? 0 : ENOMEM;
		if (wa) {
			wa->p = p;
			wa->tid = t;
			rc = pthread_create(&p->th[t], NULL, worker_main, wa);
			if (rc)
				nz_free(wa);
		}
		if (rc) {
			cpu_pool_destroy(p);
			return nz_error(rc == ENOMEM ? NZ_ERR_OOM : NZ_ERR_INTERNAL,
			                "thread pool: cannot start worker thread %d of %d (error %d)", t, nthreads, rc);
		}
		p->started = t;
	}
	*out = p;
	return NZ_OK;
}

void cpu_pool_destroy(cpu_pool *p)
{
	if (!p)
		return;
	if (p->started) {
		atomic_store_explicit(&p->stop, 1, memory_order_release);
		atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
		futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
		for (int t = 1; t <= p->started; t++)
			pthread_join(p->th[t], NULL);
	}
	nz_free(p->th);
	nz_free(p);
}

int cpu_pool_threads(const cpu_pool *p) { return p->n; }

void cpu_pool_run(cpu_pool *p, int64_t ntasks, cpu_task_fn fn, void *ctx)
{
	if (ntasks <= 0)
		return;
	if (p->n == 1 || ntasks == 1) {
		for (int64_t i = 0; i < ntasks; i++)
			fn(ctx, i, 0);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	p->ntasks = ntasks;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	atomic_store_explicit(&p->active, p->n - 1, memory_order_relaxed);
	uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
	atomic_store(&p->gen, g);
	if (atomic_load(&p->sleepers) > 0)
		futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
	run_tasks(p, 0);
	int spins = 0;
	uint32_t d;
	while ((d = atomic_load_explicit(&p->done, memory_order_acquire)) != g) {
		if (spins < SPIN_ITERS) {
			_mm_pause();
			spins++;
			continue;
		}
		atomic_store(&p->main_waiting, 1);
		if (atomic_load(&p->done) == d)
			futex(&p->done, FUTEX_WAIT_PRIVATE, d);
		atomic_store(&p->main_waiting, 0);
	}
}
