// SPDX-License-Identifier: GPL-2.0
/*
 * A test PPS source for the guest kernels: a real /dev/ppsN (pps_core, RFC 2783) whose assert
 * edges come at the top of every CLOCK_REALTIME second plus `phase_ns`, timestamped by the
 * kernel as a hardware source's would be. qemu's UARTs cannot toggle DCD, so the PPS line
 * discipline cannot be fed from the host; this is the closest faithful source.
 *
 *   insmod pps_clockpath.ko phase_ns=250000000
 *   echo 0 > /sys/module/pps_clockpath/parameters/running   # signal lost
 *   echo 1 > /sys/module/pps_clockpath/parameters/running   # pulses resume
 */
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/pps_kernel.h>
#include <linux/timekeeping.h>

static unsigned int phase_ns;
module_param(phase_ns, uint, 0444);
MODULE_PARM_DESC(phase_ns, "edge phase after the top of each second (ns)");

static bool running = true;
module_param(running, bool, 0644);
MODULE_PARM_DESC(running, "0: no edges (signal lost), 1: edges every second");

static struct pps_device *pps;
static struct hrtimer timer;

/* The next top of a CLOCK_REALTIME second, plus the phase. */
static ktime_t next_edge(void)
{
	u64 now = ktime_get_real_ns();

	return ns_to_ktime((div_u64(now, NSEC_PER_SEC) + 1) * NSEC_PER_SEC + phase_ns);
}

static enum hrtimer_restart edge(struct hrtimer *t)
{
	struct pps_event_time ts;

	if (READ_ONCE(running)) {
		pps_get_ts(&ts);
		pps_event(pps, &ts, PPS_CAPTUREASSERT, NULL);
	}
	hrtimer_set_expires(t, next_edge());
	return HRTIMER_RESTART;
}

static struct pps_source_info info = {
	.name = "clockpath-pps",
	.path = "",
	.mode = PPS_CAPTUREASSERT | PPS_OFFSETASSERT | PPS_CANWAIT | PPS_TSFMT_TSPEC,
	.owner = THIS_MODULE,
};

static int __init pps_clockpath_init(void)
{
	if (phase_ns >= NSEC_PER_SEC)
		return -EINVAL;
	pps = pps_register_source(&info, PPS_CAPTUREASSERT | PPS_OFFSETASSERT);
	if (IS_ERR(pps))
		return PTR_ERR(pps);
	hrtimer_init(&timer, CLOCK_REALTIME, HRTIMER_MODE_ABS);
	timer.function = edge;
	hrtimer_start(&timer, next_edge(), HRTIMER_MODE_ABS);
	return 0;
}

static void __exit pps_clockpath_exit(void)
{
	hrtimer_cancel(&timer);
	pps_unregister_source(pps);
}

module_init(pps_clockpath_init);
module_exit(pps_clockpath_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("clockpath test PPS source: edges at the top of each second plus a phase");
