//! Counters read from Prometheus text: etcd's own (`/metrics` of its metrics listener:
//! gRPC messages received per method, bytes received from clients) and the orchestrator's
//! engine counters (transactions and reads it made).

use std::collections::BTreeMap;

use batonctl::client::ApiClient;

use crate::error::HarnessError;

/// The gRPC method whose messages are lease keep-alives: what every live agent sends all
/// the time, upgrade or not.
pub const KEEP_ALIVE: &str = "LeaseKeepAlive";

/// Metric samples: series (name and labels, as written) to value.
#[derive(Debug, Clone, Default)]
pub struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// Parses Prometheus text.
    pub fn parse(text: &str) -> Self {
        Samples(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The sum of metric `name` over the series whose labels satisfy `labels`.
    pub fn sum(&self, name: &str, labels: impl Fn(&str) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                metric == name && labels(rest)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// What grew from `before` to `self`, per series.
    pub fn since(&self, before: &Samples) -> Samples {
        Samples(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }
}

/// Fetches `url`'s `/metrics` with `api` (its base URL).
pub async fn scrape(api: &ApiClient) -> Result<Samples, HarnessError> {
    let method = "GET"
        .parse()
        .map_err(|e| HarnessError(format!("GET: {e}")))?;
    let (_, body) = api
        .raw(method, "/metrics", None)
        .await
        .map_err(|e| HarnessError(format!("{}/metrics: {e}", api.base())))?;
    Ok(Samples::parse(&String::from_utf8_lossy(&body)))
}

/// What etcd counted in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdCounts {
    /// gRPC messages received (a unary request is one; a stream sends several).
    pub requests: f64,
    /// Of which lease keep-alives.
    pub keep_alives: f64,
    /// Bytes received from clients.
    pub bytes_received: f64,
    /// gRPC messages received, by method (`Txn`, `Range`, `UserGet`, …).
    pub by_method: BTreeMap<String, f64>,
}

impl EtcdCounts {
    /// From the growth of etcd's samples over the window.
    pub fn from(grown: &Samples) -> Self {
        let method =
            |m: &'static str| move |labels: &str| labels.contains(&format!("grpc_method=\"{m}\""));
        EtcdCounts {
            requests: grown.sum("grpc_server_msg_received_total", |_| true),
            keep_alives: grown.sum("grpc_server_msg_received_total", method(KEEP_ALIVE)),
            bytes_received: grown.sum("etcd_network_client_grpc_received_bytes_total", |_| true),
            by_method: by_method(grown),
        }
    }
}

/// `grpc_server_msg_received_total` by its `grpc_method` label, leaving out methods that
/// received nothing.
fn by_method(grown: &Samples) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (series, value) in &grown.0 {
        let Some(labels) = series.strip_prefix("grpc_server_msg_received_total{") else {
            continue;
        };
        let Some(method) = labels
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        if *value > 0.0 {
            *out.entry(method.to_owned()).or_default() += value;
        }
    }
    out
}

/// The requests the orchestrator's engine made in a window (its transactions, committed
/// or refused, and its reads), from its own counters.
pub fn engine_requests(grown: &Samples) -> f64 {
    [
        "baton_engine_commits_total",
        "baton_engine_conflicts_total",
        "baton_engine_etcd_reads_total",
    ]
    .iter()
    .map(|name| grown.sum(name, |_| true))
    .sum()
}

/// What the orchestrator's engine did, from its own counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineWork {
    /// Passes.
    pub passes: f64,
    /// Hosts its passes looked at (`baton_engine_hosts_visited_total`).
    pub hosts_visited: f64,
}

/// [`EngineWork`] over a span.
pub fn engine_work(grown: &Samples) -> EngineWork {
    EngineWork {
        passes: grown.sum("baton_engine_passes_total", |_| true),
        hosts_visited: grown.sum("baton_engine_hosts_visited_total", |_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_by_name_and_labels_and_subtracts_windows() {
        let before = Samples::parse(
            "# HELP x\ngrpc_server_msg_received_total{grpc_method=\"Txn\"} 10\n\
             grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"} 5\n",
        );
        let after = Samples::parse(
            "grpc_server_msg_received_total{grpc_method=\"Txn\"} 15\n\
             grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"} 25\n\
             grpc_server_msg_received_total{grpc_method=\"Range\"} 2\n\
             etcd_network_client_grpc_received_bytes_total 1e3\n",
        );
        let counts = EtcdCounts::from(&after.since(&before));
        assert_eq!(counts.requests, 5.0 + 20.0 + 2.0);
        assert_eq!(counts.keep_alives, 20.0);
        assert_eq!(counts.bytes_received, 1000.0);
        assert_eq!(
            counts.by_method,
            BTreeMap::from([
                ("LeaseKeepAlive".to_owned(), 20.0),
                ("Range".to_owned(), 2.0),
                ("Txn".to_owned(), 5.0)
            ])
        );
        let engine =
            Samples::parse("baton_engine_commits_total 3\nbaton_engine_etcd_reads_total 4\n");
        assert_eq!(engine_requests(&engine), 7.0);
    }
}
