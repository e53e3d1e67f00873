// SPDX-License-Identifier: GPL-2.0
/*
 * wd_dummy engine: the software stand-in for an accelerator's hardware
 * engine.  It follows the seed's NAPI-like model:
 *
 *  - A kick (the doorbell's slow path) puts its queue on the device's poll
 *    list and wakes one sleeping engine thread: O(1), whatever the number
 *    of open queues.
 *  - An engine thread takes the first queue of the list, runs up to a
 *    budget of its requests (WD_DUMMY_BUDGET descriptors or
 *    WD_DUMMY_BUDGET_NS of work), then puts it back at the tail while it
 *    has work, or while it is inside its polling window; otherwise the
 *    queue goes idle (WD_Q_ENGINE_IDLE in its ring: the user's next
 *    submission kicks).  While a queue is polled its kicks are masked: the
 *    user sees no IDLE flag and submits without a system call.
 *  - With an empty list every engine thread sleeps, with no timer: an idle
 *    device costs nothing, however many queues are open.
 *
 * A request may take long: a huge one, or one whose user memory never
 * arrives (a userfaultfd nobody serves, a FUSE file).  Only its own queue
 * may wait for it.  So a queue is held by one engine thread at a time
 * (which keeps its requests in order), and when every engine thread has
 * held its queue for longer than stall_us while other queues wait on the
 * list, a watchdog adds a thread (up to max_engines).  Extra threads exit
 * when they find nothing to do while another thread already sleeps.
 *
 * Engine threads, not a workqueue: a work item stuck in a page fault can
 * neither be told to stop nor waited for with a bound.  An engine thread
 * accepts SIGKILL from the kernel: queue_close (also reached from reset,
 * unbind and owner death) sends it to the thread holding the queue, which
 * makes a wait on user memory fail (a kernel-mode fault gives up only on
 * a fatal signal) and every algorithm step stop, so close never waits for
 * user space.  Engine threads run on the device's CPU (engine_cpus).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/slab.h>

#include "dummy_accel.h"

#define WD_DUMMY_BUDGET		64		/* descriptors per turn */
#define WD_DUMMY_BUDGET_NS	(2 * NSEC_PER_MSEC)	/* work per turn */

/*
 * struct wd_dummy_engine - one engine thread.
 * Locking: @node, @sleep_node, @cur and @since are under d->lock; the
 * rest belongs to the thread.
 */
struct wd_dummy_engine {
	struct wd_dummy_dev *d;
	struct task_struct *task;	/* referenced: see wd_dummy_reap() */
	struct list_head node;		/* on d->engines or d->retired */
	struct list_head sleep_node;	/* on d->sleepers while asleep */
	struct wd_dummy_queue *cur;	/* the queue it holds, or NULL */
	unsigned long since;		/* jiffies when it took @cur */
	struct wd_dummy_scratch scratch;
	struct wd_desc batch[WD_DUMMY_BATCH];
	struct wd_desc tmp[WD_DUMMY_BATCH];
};

static int wd_dummy_engine_add(struct wd_dummy_dev *d);

/* ---------------------------------------------------------------------- */
/* The watchdog: a thread for the others when every thread is held up */

static unsigned long wd_dummy_stall_jiffies(void)
{
	return max(1UL, usecs_to_jiffies(READ_ONCE(wd_dummy_stall_us)));
}

/* Queues wait on the list and no engine sleeps: watch for a stall. */
static void wd_dummy_watch_locked(struct wd_dummy_dev *d)
{
	lockdep_assert_held(&d->lock);
	if (!d->stopping && !list_empty(&d->poll_list) &&
	    list_empty(&d->sleepers))
		queue_delayed_work(system_wq, &d->watchdog,
				   wd_dummy_stall_jiffies());
}

/* Stop and free the engines that exited on their own. */
static void wd_dummy_reap(struct wd_dummy_dev *d)
{
	struct wd_dummy_engine *e;
	LIST_HEAD(dead);

	spin_lock(&d->lock);
	list_splice_init(&d->retired, &dead);
	spin_unlock(&d->lock);
	while ((e = list_first_entry_or_null(&dead, struct wd_dummy_engine,
					     node))) {
		list_del(&e->node);
		/* It has returned (or is returning): this only waits for it. */
		kthread_stop(e->task);
		put_task_struct(e->task);
		wd_dummy_scratch_free(&e->scratch);
		kfree(e);
	}
}

static void wd_dummy_watchdog(struct work_struct *work)
{
	struct wd_dummy_dev *d = container_of(to_delayed_work(work),
					      struct wd_dummy_dev, watchdog);
	unsigned long stall = wd_dummy_stall_jiffies();
	unsigned long now = jiffies, wait = 0;
	struct wd_dummy_engine *e;
	bool grow;

	wd_dummy_reap(d);
	spin_lock(&d->lock);
	grow = !d->stopping && !list_empty(&d->poll_list) &&
	       list_empty(&d->sleepers) &&
	       d->nr_engines < READ_ONCE(wd_dummy_max_engines);
	list_for_each_entry(e, &d->engines, node) {
		if (!grow)
			break;
		if (!e->cur) {
			grow = false;	/* it is about to take a queue */
		} else if (time_before(now, e->since + stall)) {
			/* Not held up yet: look again when it would be. */
			grow = false;
			wait = e->since + stall - now;
		}
	}
	if (wait && !d->stopping)
		queue_delayed_work(system_wq, &d->watchdog, wait);
	spin_unlock(&d->lock);

	if (grow && wd_dummy_engine_add(d)) {
		spin_lock(&d->lock);
		wd_dummy_watch_locked(d);	/* try again later */
		spin_unlock(&d->lock);
	}
}

/* ---------------------------------------------------------------------- */
/* Queues on and off the poll list */

/*
 * The polling window adapts like NAPI's interrupt moderation: a kick soon
 * after the queue went idle means requests come a little slower than the
 * window, and each of them paid a kick; so the window doubles (up to
 * poll_max_us).  A long quiet spell brings it back to poll_idle_us.
 */
static u64 wd_dummy_adapt_window(u64 window, u64 idle_ns)
{
	u64 lo = (u64)READ_ONCE(wd_dummy_poll_idle_us) * NSEC_PER_USEC;
	u64 hi = max_t(u64, lo,
		       (u64)READ_ONCE(wd_dummy_poll_max_us) * NSEC_PER_USEC);

	if (idle_ns < 4 * window)
		window *= 2;
	else if (idle_ns > 64 * window)
		window /= 2;
	return clamp(window, lo, hi);
}

/* Hand a listed queue to an engine: wake a sleeping one, or watch. */
static void wd_dummy_wake_engine_locked(struct wd_dummy_dev *d)
{
	struct wd_dummy_engine *e;

	e = list_first_entry_or_null(&d->sleepers, struct wd_dummy_engine,
				     sleep_node);
	if (e) {
		list_del_init(&e->sleep_node);
		wake_up_process(e->task);
	} else {
		wd_dummy_watch_locked(d);
	}
}

/**
 * wd_dummy_engine_kick() - the doorbell's slow path (ops->kick)
 * @d: the device
 * @q: the queue that was kicked
 *
 * O(1): an idle queue goes on the poll list and one engine thread wakes;
 * a queue being served is polled again before it may go idle.
 */
void wd_dummy_engine_kick(struct wd_dummy_dev *d, struct wd_queue *q)
{
	struct wd_dummy_queue *dq;

	spin_lock(&d->lock);
	dq = wd_queue_priv(q);	/* NULL once queue_close has begun */
	if (dq && dq->state == WD_DQ_IDLE) {
		dq->state = WD_DQ_LISTED;
		list_add_tail(&dq->node, &d->poll_list);
		wd_dummy_wake_engine_locked(d);
	} else if (dq && dq->state == WD_DQ_RUNNING) {
		WRITE_ONCE(dq->kicked, true);
	}
	spin_unlock(&d->lock);
}

/**
 * wd_dummy_engine_add_queue() - make an opened queue known to the engine
 * @d: the device
 * @dq: the queue, its fields set
 *
 * The queue starts idle: the ring says WD_Q_ENGINE_IDLE, so the user's
 * first submission kicks.
 */
void wd_dummy_engine_add_queue(struct wd_dummy_dev *d,
			       struct wd_dummy_queue *dq)
{
	dq->state = WD_DQ_IDLE;
	dq->ring_idle = true;
	dq->window_ns = (u64)READ_ONCE(wd_dummy_poll_idle_us) * NSEC_PER_USEC;
	dq->idle_since_ns = ktime_get_ns();
	wd_queue_set_idle(dq->q, true);
	spin_lock(&d->lock);
	wd_queue_set_priv(dq->q, dq);
	spin_unlock(&d->lock);
}

static bool wd_dummy_queue_held(struct wd_dummy_dev *d,
				struct wd_dummy_queue *dq)
{
	bool held;

	spin_lock(&d->lock);
	held = dq->state == WD_DQ_RUNNING;
	spin_unlock(&d->lock);
	return held;
}

/**
 * wd_dummy_engine_del_queue() - stop serving a queue (ops->queue_close)
 * @d: the device
 * @dq: the queue
 *
 * Takes the queue off the poll list, or, if an engine thread holds it,
 * sends that thread SIGKILL (a request waiting on user memory fails, a
 * long one stops at its next step) and waits for it to let go.  Returns
 * with no engine thread touching @dq, and no kick able to reach it.
 */
void wd_dummy_engine_del_queue(struct wd_dummy_dev *d,
			       struct wd_dummy_queue *dq)
{
	spin_lock(&d->lock);
	WRITE_ONCE(dq->closing, true);
	wd_queue_set_priv(dq->q, NULL);
	if (dq->state == WD_DQ_LISTED) {
		list_del(&dq->node);
		dq->state = WD_DQ_IDLE;
	} else if (dq->state == WD_DQ_RUNNING) {
		/* Under the lock: the thread still holds @dq (see release). */
		send_sig(SIGKILL, dq->engine->task, 1);
	}
	spin_unlock(&d->lock);
	wait_event(d->release_wq, !wd_dummy_queue_held(d, dq));
}

/* ---------------------------------------------------------------------- */
/* Serving one queue */

/* Run up to a budget of @dq's requests; true if there were any. */
static bool wd_dummy_serve(struct wd_dummy_engine *e, struct wd_dummy_queue *dq)
{
	struct wd_queue *q = dq->q;
	u64 t0 = ktime_get_ns(), now;
	struct wd_cqe cqe;
	u32 done = 0, n, i;
	bool access;

	if (dq->ring_idle) {
		/* Woken by a kick: unmask, i.e. tell the user we poll. */
		wd_queue_set_idle(q, false);
		dq->ring_idle = false;
		dq->window_ns = wd_dummy_adapt_window(dq->window_ns,
						      t0 - dq->idle_since_ns);
		dq->last_work_ns = t0;
	}
	access = !wd_queue_begin_access(q);
	while (done < WD_DUMMY_BUDGET && !READ_ONCE(dq->closing)) {
		n = wd_queue_fetch(q, e->batch,
				   min(WD_DUMMY_BATCH, WD_DUMMY_BUDGET - done));
		if (!n)
			break;
		if (dq->weak)
			wd_dummy_weak_order(e->batch, n, e->tmp);
		for (i = 0; i < n; i++) {
			if (access) {
				wd_dummy_exec(&e->scratch, dq, &e->batch[i],
					      &cqe);
			} else {
				cqe = (struct wd_cqe) {
					.tag = e->batch[i].tag,
					.status = WD_STS_BAD_ADDR,
				};
			}
			wd_queue_post(q, &cqe);
			/*
			 * A sleeper wants the first completion, not the last
			 * of the turn: a turn of large requests takes long.
			 */
			wd_queue_notify(q);
		}
		done += n;
		if (ktime_get_ns() - t0 > WD_DUMMY_BUDGET_NS)
			break;
	}
	if (access)
		wd_queue_end_access(q);
	if (!done)
		return false;
	now = ktime_get_ns();
	dq->last_work_ns = now;
	wd_accel_add_busy_ns(dq->d->accel, now - t0);
	return true;
}

/*
 * Keep polling a queue that had nothing to do?  Inside its window, yes,
 * even when another task wants this CPU: like io_uring's SQPOLL thread, the
 * engine gives the CPU up only through cond_resched().  Yielding to a
 * caller that landed on our CPU would hide it from the load balancer (it
 * never waits) and keep the two together, a kick per request; kept
 * waiting, an unpinned caller is moved to an idle CPU.  The price: a
 * caller pinned to the engine's CPU waits for CFS each time.  Do not.
 */
static bool wd_dummy_keep_polling(struct wd_dummy_queue *dq)
{
	return ktime_get_ns() - dq->last_work_ns < dq->window_ns;
}

/*
 * After a turn, still holding the queue: may it go idle?  If so, set
 * WD_Q_ENGINE_IDLE, then look at the doorbell once more.  Pairs with the
 * user's store of sq_tail, full barrier, read of the status: one of the
 * two sees the other, so no submission is left behind.
 */
static bool wd_dummy_try_idle(struct wd_dummy_queue *dq, bool busy)
{
	if (busy || READ_ONCE(dq->kicked) || READ_ONCE(dq->closing) ||
	    wd_dummy_keep_polling(dq))
		return false;
	wd_queue_set_idle(dq->q, true);
	smp_mb();	/* IDLE visible before sq_tail is read: see above */
	if (wd_queue_pending(dq->q)) {
		wd_queue_set_idle(dq->q, false);
		return false;
	}
	dq->ring_idle = true;
	dq->idle_since_ns = ktime_get_ns();
	return true;
}

/* Let go of a queue: idle, or back on the list.  Wakes a waiting closer. */
static void wd_dummy_release_locked(struct wd_dummy_dev *d,
				    struct wd_dummy_queue *dq, bool idle)
{
	lockdep_assert_held(&d->lock);
	dq->engine = NULL;
	if (dq->closing) {
		dq->state = WD_DQ_IDLE;
		wake_up_all(&d->release_wq);
	} else if (idle && !dq->kicked) {
		dq->state = WD_DQ_IDLE;
	} else {
		/* Kicked while going idle: the next turn clears the flag. */
		dq->state = WD_DQ_LISTED;
		list_add_tail(&dq->node, &d->poll_list);
	}
}

/* ---------------------------------------------------------------------- */
/* Engine threads */

/* Nothing to do: sleep (no timer) until a kick or kthread_stop(). */
static void wd_dummy_sleep_locked(struct wd_dummy_engine *e)
	__must_hold(&e->d->lock)
{
	struct wd_dummy_dev *d = e->d;

	list_add(&e->sleep_node, &d->sleepers);
	set_current_state(TASK_IDLE);
	spin_unlock(&d->lock);
	if (!kthread_should_stop())
		schedule();
	__set_current_state(TASK_RUNNING);
	spin_lock(&d->lock);
	list_del_init(&e->sleep_node);
}

static int wd_dummy_engine_fn(void *data)
{
	struct wd_dummy_engine *e = data;
	struct wd_dummy_dev *d = e->d;
	struct wd_dummy_queue *dq;
	bool idle;

	/* See wd_dummy_engine_del_queue(); user space cannot signal us. */
	allow_kernel_signal(SIGKILL);
	spin_lock(&d->lock);
	while (!kthread_should_stop()) {
		dq = list_first_entry_or_null(&d->poll_list,
					      struct wd_dummy_queue, node);
		if (!dq) {
			/* One sleeping thread is enough: extra ones exit. */
			if (!list_empty(&d->sleepers) && !d->stopping) {
				list_move(&e->node, &d->retired);
				d->nr_engines--;
				mod_delayed_work(system_wq, &d->watchdog, 0);
				spin_unlock(&d->lock);
				/* Ours until we return: see wd_dummy_reap(). */
				wd_dummy_scratch_free(&e->scratch);
				return 0;
			}
			wd_dummy_sleep_locked(e);
			continue;
		}
		list_del(&dq->node);
		dq->state = WD_DQ_RUNNING;
		dq->engine = e;
		WRITE_ONCE(dq->kicked, false);
		e->cur = dq;
		e->since = jiffies;
		wd_dummy_watch_locked(d);
		spin_unlock(&d->lock);

		idle = wd_dummy_try_idle(dq, wd_dummy_serve(e, dq));

		spin_lock(&d->lock);
		e->cur = NULL;
		/* A SIGKILL sent for @dq must not hit the next queue. */
		flush_signals(current);
		wd_dummy_release_locked(d, dq, idle);
		if (!list_empty(&d->poll_list)) {
			spin_unlock(&d->lock);
			cond_resched();
			spin_lock(&d->lock);
		}
	}
	spin_unlock(&d->lock);
	return 0;
}

/* Start one more engine thread, on the device's CPU. */
static int wd_dummy_engine_add(struct wd_dummy_dev *d)
{
	struct wd_dummy_engine *e;
	struct task_struct *task;
	unsigned int id;
	int ret;

	e = kzalloc_node(sizeof(*e), GFP_KERNEL, d->node);
	if (!e)
		return -ENOMEM;
	e->d = d;
	INIT_LIST_HEAD(&e->sleep_node);
	ret = wd_dummy_scratch_alloc(&e->scratch, d->node);
	if (ret)
		goto err_free;

	spin_lock(&d->lock);
	id = d->next_engine_id++;
	spin_unlock(&d->lock);
	if (id)
		task = kthread_create_on_node(wd_dummy_engine_fn, e, d->node,
					      WD_DUMMY_NAME "/%u.%u", d->idx,
					      id);
	else
		task = kthread_create_on_node(wd_dummy_engine_fn, e, d->node,
					      WD_DUMMY_NAME "/%u", d->idx);
	if (IS_ERR(task)) {
		ret = PTR_ERR(task);
		goto err_scratch;
	}
	/* Keep the task_struct: an extra thread may exit on its own. */
	get_task_struct(task);
	e->task = task;
	if (d->cpu >= 0)
		set_cpus_allowed_ptr(task, cpumask_of(d->cpu));

	spin_lock(&d->lock);
	if (d->stopping) {
		/* The watchdog lost the race with wd_dummy_engine_fini(). */
		spin_unlock(&d->lock);
		kthread_stop(task);	/* never woken: threadfn never runs */
		put_task_struct(task);
		ret = -ENODEV;
		goto err_scratch;
	}
	list_add_tail(&e->node, &d->engines);
	d->nr_engines++;
	spin_unlock(&d->lock);
	wake_up_process(task);
	return 0;

err_scratch:
	wd_dummy_scratch_free(&e->scratch);
err_free:
	kfree(e);
	return ret;
}

/**
 * wd_dummy_engine_init() - start a device's engine: one thread, asleep
 * @d: the device, @idx, @node and @cpu set
 *
 * Return: 0 or a negative errno.
 */
int wd_dummy_engine_init(struct wd_dummy_dev *d)
{
	spin_lock_init(&d->lock);
	INIT_LIST_HEAD(&d->poll_list);
	INIT_LIST_HEAD(&d->engines);
	INIT_LIST_HEAD(&d->sleepers);
	INIT_LIST_HEAD(&d->retired);
	init_waitqueue_head(&d->release_wq);
	INIT_DELAYED_WORK(&d->watchdog, wd_dummy_watchdog);
	return wd_dummy_engine_add(d);
}

/**
 * wd_dummy_engine_fini() - stop every engine thread of a device
 * @d: the device; no queue is open any more
 */
void wd_dummy_engine_fini(struct wd_dummy_dev *d)
{
	spin_lock(&d->lock);
	d->stopping = true;	/* no re-arming, no retiring from now on */
	list_splice_init(&d->engines, &d->retired);
	d->nr_engines = 0;
	spin_unlock(&d->lock);
	cancel_delayed_work_sync(&d->watchdog);
	wd_dummy_reap(d);
}
