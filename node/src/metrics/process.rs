//! The standard process metrics, under the names every Prometheus client uses
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, …),
//! read from `/proc/self` at each scrape. Elsewhere than Linux there is no `/proc` and
//! the collector reports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    pub fn new() -> Self {
        Self
    }
}

/// One figure of the process.
enum Figure {
    Counter(f64),
    Gauge(f64),
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, figure) in read() {
            match figure {
                Figure::Counter(value) => {
                    let metric = ConstCounter::new(value);
                    metric.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        metric.metric_type(),
                    )?)?;
                }
                Figure::Gauge(value) => {
                    let metric = ConstGauge::new(value);
                    metric.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        metric.metric_type(),
                    )?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn read() -> Vec<(&'static str, &'static str, Figure)> {
    use procfs::process::{LimitValue, Process};

    let mut figures = Vec::new();
    // A figure /proc cannot give (a hardened kernel, a restricted container) is left out
    // rather than reported as zero.
    let Ok(process) = Process::myself() else {
        return figures;
    };
    if let Ok(stat) = process.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        figures.push((
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            Figure::Counter((stat.utime + stat.stime) as f64 / ticks),
        ));
        figures.push((
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            Figure::Gauge((stat.rss * procfs::page_size()) as f64),
        ));
        figures.push((
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            Figure::Gauge(stat.vsize as f64),
        ));
        if let Ok(boot) = procfs::boot_time_secs() {
            figures.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                Figure::Gauge(boot as f64 + stat.starttime as f64 / ticks),
            ));
        }
        figures.push((
            "process_threads",
            "Number of OS threads in the process",
            Figure::Gauge(stat.num_threads as f64),
        ));
    }
    if let Ok(count) = process.fd_count() {
        figures.push((
            "process_open_fds",
            "Number of open file descriptors",
            Figure::Gauge(count as f64),
        ));
    }
    if let Ok(limits) = process.limits()
        && let LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        figures.push((
            "process_max_fds",
            "Maximum number of open file descriptors",
            Figure::Gauge(max as f64),
        ));
    }
    figures
}

#[cfg(not(target_os = "linux"))]
fn read() -> Vec<(&'static str, &'static str, Figure)> {
    Vec::new()
}
