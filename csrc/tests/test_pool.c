/*
 * test_pool.c — the CPU worker pool runs every task of every job exactly
 * once, with and without memory-bound tasks, for many short jobs in a row
 * (where a late worker meets the next job).
 */
#include <stdatomic.h>

#include "cpu_pool.h"
#include "testutil.h"

static _Atomic int ran[64];
static _Atomic int max_tid;

static void task(void *ctx, int64_t i, int tid)
{
	atomic_fetch_add(&ran[i], 1);
	int m = atomic_load(&max_tid);
	while (tid > m && !atomic_compare_exchange_weak(&max_tid, &m, tid))
		;
	for (volatile int k = 0; k < (int)(i % 7) * 50; k++)
		;
}

int main(void)
{
	for (int threads = 1; threads <= 3; threads++) {
		cpu_pool *p = NULL;
		CHECK_OK(cpu_pool_create(threads, &p));
		if (!p)
			break;
		CHECK(cpu_pool_threads(p) == threads, "threads %d", cpu_pool_threads(p));
		int bad = 0;
		atomic_store(&max_tid, 0);
		for (int job = 0; job < 20000; job++) {
			int n = 1 + job % 41, n_mem = job % 6 < n ? job % 6 : n;
			for (int i = 0; i < n; i++)
				atomic_store(&ran[i], 0);
			if (job % 2)
				cpu_pool_run_mixed(p, n_mem, n, task, NULL);
			else
				cpu_pool_run(p, n, task, NULL);
			for (int i = 0; i < n; i++)
				if (atomic_load(&ran[i]) != 1 && bad++ < 3)
					CHECK(0, "%d threads, job %d (%d tasks, %d memory-bound): task %d ran %d times", threads, job, n,
					      n_mem, i, atomic_load(&ran[i]));
		}
		CHECK(bad == 0, "%d threads: %d tasks did not run exactly once", threads, bad);
		CHECK(atomic_load(&max_tid) < threads, "tid %d out of range", atomic_load(&max_tid));
		cpu_pool_destroy(p);
	}
	CHECK(cpu_online_cores() >= 1, "online cores");
	return t_done("test_pool");
}
