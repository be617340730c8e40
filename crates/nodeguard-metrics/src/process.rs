//! The agent's own resource use, under the standard `process_*` names every Prometheus client
//! exports, read from `/proc/self` with procfs at scrape time. An SRE checks with these that
//! the agent stays within its CPU and memory budget on every node.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::fmt;

/// Renders `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads` and `process_start_time_seconds`. A series that cannot be read is left
/// out of that scrape; nothing fails.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct SelfUsage {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

pub(crate) fn read_self() -> SelfUsage {
    let mut usage = SelfUsage::default();
    let Ok(me) = procfs::process::Process::myself() else {
        return usage;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        if ticks > 0.0 {
            usage.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            if let Ok(boot) = procfs::boot_time_secs() {
                usage.start_time_seconds = Some(boot as f64 + stat.starttime as f64 / ticks);
            }
        }
        usage.resident_bytes = Some(stat.rss.saturating_mul(procfs::page_size()));
        usage.virtual_bytes = Some(stat.vsize);
        usage.threads = u64::try_from(stat.num_threads).ok();
    }
    usage.open_fds = me.fd_count().ok().map(|n| n as u64);
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(n) = limits.max_open_files.soft_limit {
            usage.max_fds = Some(n);
        }
    }
    usage
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let u = read_self();
        if let Some(v) = u.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent by the agent.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory of the agent.",
                Some(Unit::Bytes),
                u.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory of the agent.",
                Some(Unit::Bytes),
                u.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Open file descriptors of the agent.",
                None,
                u.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Limit on open file descriptors of the agent.",
                None,
                u.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Threads of the agent.",
                None,
                u.threads.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the agent since the Unix epoch.",
                Some(Unit::Seconds),
                u.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(v) = value {
                let m = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = read_self();
        let rss = u.resident_bytes.expect("rss");
        assert!(rss > 1 << 20 && rss < 1 << 34, "{rss}");
        assert!(u.open_fds.expect("fds") >= 3);
        assert!(u.threads.expect("threads") >= 1);
        let start = u.start_time_seconds.expect("start");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
        assert!(u.cpu_seconds.expect("cpu") >= 0.0);
    }
}
