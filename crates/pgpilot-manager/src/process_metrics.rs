//! Metrics about the manager process itself: build, leadership, and the standard
//! `process_*` series (CPU, memory, file descriptors) read from /proc at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// `pgpilot_build_info` and `pgpilot_leader`.
#[derive(Clone, Default)]
pub struct ProcessMetrics {
    leader: Gauge,
}

impl ProcessMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register("build_info", "pgpilot-manager version", build);
        r.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            m.leader.clone(),
        );
        registry.register_collector(Box::new(Process));
        m
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// The process's own figures, under the names every Prometheus client library uses.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // /proc unreadable (not Linux): no samples rather than a failed scrape.
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?)?;
            let page = procfs::page_size() as i64;
            for (name, help, value) in [
                (
                    "process_resident_memory",
                    "Resident memory size",
                    stat.rss as i64 * page,
                ),
                (
                    "process_virtual_memory",
                    "Virtual memory size",
                    stat.vsize as i64,
                ),
            ] {
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    Some(&Unit::Bytes),
                    MetricType::Gauge,
                )?)?;
            }
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                ConstGauge::new(start).encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since the Unix epoch",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            ConstGauge::new(fds as i64).encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Ok(procfs::process::LimitValue::Value(max)) =
            me.limits().map(|l| l.max_open_files.soft_limit)
        {
            ConstGauge::new(max as i64).encode(encoder.encode_descriptor(
                "process_max_fds",
                "Limit of open file descriptors",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reports_its_cpu_memory_and_file_descriptors() {
        // A few clock ticks of CPU, so the counter has something to count.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let mut registry = Registry::default();
        ProcessMetrics::register(&mut registry).set_leader(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let started = value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86400.0,
            "{started} vs {now}"
        );
        assert_eq!(value("pgpilot_leader"), 1.0);
    }
}
