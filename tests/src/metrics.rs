//! Reading a node's `/metrics` the way Prometheus does: one HTTP GET on the metrics
//! listener, the answer parsed by a Prometheus text-format parser ([`prometheus_parse`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scrape's answer: status code, content type and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GETs `path` from the metrics listener at `address` (HTTP/1.1, the connection closed
/// after the answer).
pub async fn get(address: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("the metrics listener did not answer within 30 s")??;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the answer has no end of headers")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("the answer has no status line")?;
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// Scrapes `/metrics` at `address` and parses it.
pub async fn scrape(address: SocketAddr) -> anyhow::Result<Scrape> {
    let answer = get(address, "/metrics").await?;
    if answer.status != 200 {
        bail!("/metrics answered {}: {}", answer.status, answer.body);
    }
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    Ok(Scrape::parse(lines)?)
}

/// The samples of `metric` whose labels include every pair of `labels`.
pub fn samples<'a>(
    scrape: &'a Scrape,
    metric: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    scrape.samples.iter().filter(move |s| {
        s.metric == metric
            && labels
                .iter()
                .all(|(name, value)| s.labels.get(name) == Some(*value))
    })
}

/// The value of the one counter, gauge or untyped sample of `metric` with `labels`.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(scrape, metric, labels).find_map(|s| match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        _ => None,
    })
}
