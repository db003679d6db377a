/*
 * cpu_pool.c — persistent worker threads.
 *
 * A job is published as claim words (job number << 32 | next task index),
 * one for its compute tasks and one for its memory-bound tasks.
 * Every thread, the caller included, claims tasks with a compare-and-swap
 * that only succeeds for the current job, runs them and counts them done.
 * The caller returns once all tasks are done; it never waits for a worker
 * that has not woken up yet (on a busy machine a descheduled worker simply
 * claims nothing). Idle workers spin briefly, then sleep on a futex.
 */
#include "cpu_pool.h"

#include <errno.h>
#include <immintrin.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"

/* Pause iterations before an idle worker or a waiting caller sleeps. */
#define SPIN_ITERS 2000

struct cpu_pool {
	int n; /* threads including the caller */
	pthread_t *th;
	int started; /* workers started (tids 1..started) */
	uint32_t job; /* the caller's job counter */

	/* the current job; fn and ctx are read only after a successful claim */
	cpu_task_fn fn;
	void *ctx;
	_Atomic int64_t ntasks;     /* < 2^32 */
	_Atomic int64_t n_mem;      /* tasks [0, n_mem) are memory-bound */
	_Atomic uint64_t claim;     /* job << 32 | next compute task (from n_mem) */
	_Atomic uint64_t mem_claim; /* job << 32 | next memory task (from 0) */
	_Atomic int32_t mem_active; /* threads in the memory lane */
	int32_t mem_limit;
	_Atomic int64_t done;   /* tasks finished in the current job */
	_Atomic uint32_t finished;  /* futex word: the job number once all its tasks are done */
	_Atomic int32_t caller_waits; /* the caller sleeps on finished */

	_Atomic uint32_t gen;     /* futex word: the latest job number */
	_Atomic int32_t sleepers; /* workers blocked in futex_wait on gen */
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

/* Claims the next index below *limit from word for job; 0 when none.
 * The limit is read after the word: the caller closes the words before it
 * changes any limit (cpu_pool_run_mixed), so a thread still on an older
 * job can never pair that job's word with a newer limit. */
static int claim_from(_Atomic uint64_t *word, uint32_t job, _Atomic int64_t *limit, int64_t *out)
{
	for (;;) {
		uint64_t v = atomic_load(word);
		if ((uint32_t)(v >> 32) != job)
			return 0;
		int64_t i = (int64_t)(uint32_t)v;
		if (i >= atomic_load(limit))
			return 0;
		if (atomic_compare_exchange_weak(word, &v, v + 1)) {
			*out = i;
			return 1;
		}
	}
}

static void run_task(cpu_pool *p, uint32_t job, int64_t i, int tid)
{
	p->fn(p->ctx, i, tid);
	if (atomic_fetch_add(&p->done, 1) + 1 == atomic_load_explicit(&p->ntasks, memory_order_relaxed)) {
		atomic_store(&p->finished, job);
		if (atomic_load(&p->caller_waits))
			futex(&p->finished, FUTEX_WAKE_PRIVATE, 1);
	}
}

static void run_claims(cpu_pool *p, uint32_t job, int tid)
{
	int64_t i;
	for (;;) {
		int has_mem = atomic_load_explicit(&p->n_mem, memory_order_relaxed) > 0;
		if (has_mem) {
			/* the memory lane, while it has room */
			int in_lane = atomic_fetch_add(&p->mem_active, 1) < p->mem_limit;
			int got = in_lane && claim_from(&p->mem_claim, job, &p->n_mem, &i);
			if (got)
				run_task(p, job, i, tid);
			atomic_fetch_sub(&p->mem_active, 1);
			if (got)
				continue;
		}
		if (claim_from(&p->claim, job, &p->ntasks, &i)) {
			run_task(p, job, i, tid);
			continue;
		}
		/* no compute task left: memory tasks for everyone */
		if (has_mem && claim_from(&p->mem_claim, job, &p->n_mem, &i)) {
			run_task(p, job, i, tid);
			continue;
		}
		return;
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
		while ((g = atomic_load(&p->gen)) == seen) {
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
		if (atomic_load(&p->stop))
			break;
		run_claims(p, g, tid);
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
	p->mem_limit = (p->n + 1) / 2;
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
		atomic_store(&p->stop, 1);
		atomic_fetch_add(&p->gen, 1);
		futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
		for (int t = 1; t <= p->started; t++)
			pthread_join(p->th[t], NULL);
	}
	nz_free(p->th);
	nz_free(p);
}

int cpu_pool_threads(const cpu_pool *p) { return p->n; }

void cpu_pool_run_mixed(cpu_pool *p, int64_t n_mem, int64_t ntasks, cpu_task_fn fn, void *ctx)
{
	if (ntasks <= 0)
		return;
	if (p->n == 1 || ntasks == 1) {
		for (int64_t i = 0; i < ntasks; i++)
			fn(ctx, i, 0);
		return;
	}
	uint32_t job = ++p->job;
	if (job == 0) /* 0 is the workers' initial "seen" */
		job = ++p->job;
	/* close the claim words first (no index is below any limit), then set
	 * the job, then open them */
	const uint64_t closed = (uint64_t)job << 32 | 0xffffffffu;
	atomic_store(&p->mem_claim, closed);
	atomic_store(&p->claim, closed);
	p->fn = fn;
	p->ctx = ctx;
	atomic_store(&p->ntasks, ntasks);
	atomic_store(&p->n_mem, n_mem);
	atomic_store(&p->done, 0);
	atomic_store(&p->mem_claim, (uint64_t)job << 32);
	atomic_store(&p->claim, (uint64_t)job << 32 | (uint64_t)n_mem);
	atomic_store(&p->gen, job);
	if (atomic_load(&p->sleepers) > 0)
		futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
	run_claims(p, job, 0);
	/* the rest are claimed and running on workers: wait for them */
	int spins = 0;
	uint32_t f;
	while ((f = atomic_load(&p->finished)) != job) {
		if (++spins < SPIN_ITERS) {
			_mm_pause();
			continue;
		}
		atomic_store(&p->caller_waits, 1);
		if (atomic_load(&p->finished) == f)
			futex(&p->finished, FUTEX_WAIT_PRIVATE, f);
		atomic_store(&p->caller_waits, 0);
	}
}

void cpu_pool_run(cpu_pool *p, int64_t ntasks, cpu_task_fn fn, void *ctx)
{
	cpu_pool_run_mixed(p, 0, ntasks, fn, ctx);
}
