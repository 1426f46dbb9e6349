//! Checking a soak's fleet gates: an HTTP `GET` that must answer the expected status, and
//! an instant Prometheus query whose one number must lie within its bounds. Rounds run in
//! the background while a batch soaks ([`super::Engine::gate_rounds`]); the decision function
//! sees their outcome as a [`GateState`](super::model::GateState).

use std::time::Duration;

use baton_protocol::documents::Gate;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Time one gate check may take.
pub const GATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a gate.
const MAX_BODY: usize = 1 << 20;

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// A client for http and https gates; https is verified against the machine's CA
/// certificates (none found: https gates fail, saying so).
fn client() -> Result<HttpsClient, String> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_native_roots()
        .map_err(|e| format!("no CA certificates to verify https gates with: {e}"))?
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// `GET url`: its status and body (at most [`MAX_BODY`]).
async fn get(url: &str) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = client()?;
    let fetch = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(GATE_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {}s", GATE_TIMEOUT.as_secs()))?
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Checks one gate; `Err` says why it failed. `prometheus`: the configured server's base URL.
pub async fn check(gate: &Gate, prometheus: Option<&str>) -> Result<(), String> {
    match gate {
        Gate::Http { url, status } => {
            let (got, _) = get(url).await?;
            if got == *status {
                Ok(())
            } else {
                Err(format!("GET {url} answered {got}, expected {status}"))
            }
        }
        Gate::Prometheus { query, min, max } => {
            let base = prometheus.ok_or("no Prometheus is configured (--prometheus-url)")?;
            let url = format!(
                "{}/api/v1/query?query={}",
                base.trim_end_matches('/'),
                encode_query(query)
            );
            let (status, body) = get(&url).await?;
            if status != 200 {
                return Err(format!("prometheus query {query:?} answered HTTP {status}"));
            }
            let value =
                instant_value(&body).map_err(|e| format!("prometheus query {query:?}: {e}"))?;
            within(value, min.as_ref(), max.as_ref())
                .map_err(|bound| format!("prometheus query {query:?} = {value}, {bound}"))
        }
    }
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The one number of an instant query's answer (`resultType` `vector` with exactly one
/// sample, or `scalar`).
pub fn instant_value(body: &[u8]) -> Result<f64, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if answer["status"] != "success" {
        return Err(format!(
            "status {}: {}",
            answer["status"],
            answer["error"].as_str().unwrap_or("no error given")
        ));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some(many) => {
                return Err(format!(
                    "gives {} series, a gate needs exactly one (aggregate it, e.g. sum(...))",
                    many.len()
                ));
            }
            None => return Err("vector result is not a list".into()),
        },
        other => {
            return Err(format!(
                "result type {other:?}: a gate needs a vector or a scalar"
            ));
        }
    };
    // A sample is [unix time, "value"]: the value is a string (it may be "NaN", "+Inf").
    let text = sample[1]
        .as_str()
        .ok_or_else(|| format!("sample {sample} has no value"))?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("sample value {text:?} is not a number"))?;
    if value.is_nan() {
        return Err("the value is NaN".into());
    }
    Ok(value)
}

/// Whether `value` lies within the bounds; `Err` names the bound it breaks.
pub fn within(
    value: f64,
    min: Option<&serde_json::Number>,
    max: Option<&serde_json::Number>,
) -> Result<(), String> {
    if let Some(lo) = min.and_then(serde_json::Number::as_f64)
        && value < lo
    {
        return Err(format!("below min {lo}"));
    }
    if let Some(hi) = max.and_then(serde_json::Number::as_f64)
        && value > hi
    {
        return Err(format!("above max {hi}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn number(v: f64) -> serde_json::Number {
        serde_json::Number::from_f64(v).expect("finite")
    }

    #[test]
    fn instant_answers_give_one_number() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1733140000.1,"0.25"]}]}}"#;
        assert_eq!(instant_value(vector), Ok(0.25));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1733140000,"3"]}}"#;
        assert_eq!(instant_value(scalar), Ok(3.0));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert!(instant_value(two).expect_err("two").contains("2 series"));
        let none = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(instant_value(none).expect_err("none").contains("0 series"));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(
            instant_value(error)
                .expect_err("error")
                .contains("parse error")
        );
        let nan = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert!(instant_value(nan).is_err());
        assert!(instant_value(b"<html>").is_err());
    }

    #[test]
    fn bounds_are_inclusive_and_named_when_broken() {
        assert_eq!(within(1.0, Some(&number(1.0)), Some(&number(2.0))), Ok(()));
        assert_eq!(within(2.0, None, Some(&number(2.0))), Ok(()));
        assert_eq!(
            within(0.5, Some(&number(1.0)), None),
            Err("below min 1".into())
        );
        assert_eq!(
            within(2.5, None, Some(&number(2.0))),
            Err("above max 2".into())
        );
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode_query(r#"sum(rate(x{job="a b"}[5m]))"#),
            "sum%28rate%28x%7Bjob%3D%22a%20b%22%7D%5B5m%5D%29%29"
        );
    }

    /// A stand-in for Prometheus's HTTP API on a loopback port: answers every request with
    /// `body` (as `/api/v1/query` would) and hands back the request lines it got.
    async fn prometheus_stand_in(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).await.expect("read");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        (url, served)
    }

    #[tokio::test]
    async fn a_prometheus_gate_asks_the_configured_server_and_checks_the_bound() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1733140000,"0.75"]}]}}"#;
        let gate = |max: f64| Gate::Prometheus {
            query: "sum(up)".into(),
            min: None,
            max: Some(number(max)),
        };
        let (url, served) = prometheus_stand_in(body).await;
        assert_eq!(check(&gate(1.0), Some(&url)).await, Ok(()));
        assert_eq!(
            served.await.expect("served"),
            "GET /api/v1/query?query=sum%28up%29 HTTP/1.1"
        );
        let (url, _served) = prometheus_stand_in(body).await;
        let err = check(&gate(0.5), Some(&url)).await.expect_err("above");
        assert!(
            err.contains("0.75") && err.contains("above max 0.5"),
            "{err}"
        );
        let err = check(&gate(1.0), None).await.expect_err("unconfigured");
        assert!(err.contains("--prometheus-url"), "{err}");
    }

    #[tokio::test]
    async fn an_http_gate_wants_its_status() {
        let (url, _served) = prometheus_stand_in("{}").await;
        let ok = Gate::Http {
            url: url.clone(),
            status: 200,
        };
        assert_eq!(check(&ok, None).await, Ok(()));
        let (url, _served) = prometheus_stand_in("{}").await;
        let err = check(&Gate::Http { url, status: 204 }, None)
            .await
            .expect_err("status");
        assert!(err.contains("answered 200, expected 204"), "{err}");
        // Nothing listens on port 1 of loopback.
        let err = check(
            &Gate::Http {
                url: "http://127.0.0.1:1/".into(),
                status: 200,
            },
            None,
        )
        .await
        .expect_err("refused");
        assert!(err.starts_with("GET http://127.0.0.1:1/"), "{err}");
    }
}

/// Time between the starts of two rounds of one soak's gates.
pub const GATE_INTERVAL: Duration = Duration::from_secs(2);

/// What one round of a soak's gates found.
#[derive(Debug)]
pub struct Round {
    /// The upgrade.
    pub upgrade: baton_protocol::UpgradeId,
    /// The soaking batch.
    pub batch: u32,
    /// When that soak started (`soak.since`).
    pub since: String,
    /// When the round started.
    pub started: std::time::SystemTime,
    /// Every gate passed, or the first failure.
    pub outcome: Result<(), String>,
}

/// Checks every gate in turn, stopping at the first failure.
pub async fn round(gates: Vec<Gate>, prometheus: Option<String>) -> Result<(), String> {
    for gate in &gates {
        check(gate, prometheus.as_deref())
            .await
            .map_err(|why| format!("{gate}: {why}"))?;
    }
    Ok(())
}

/// The gate rounds of this leadership: one at a time per soaking upgrade.
#[derive(Debug)]
pub struct Rounds {
    /// Upgrades whose round runs now.
    pub running: std::collections::BTreeSet<baton_protocol::UpgradeId>,
    /// When each upgrade's last round started.
    pub last: std::collections::BTreeMap<baton_protocol::UpgradeId, std::time::Instant>,
    /// What the rounds found, per upgrade.
    pub states: std::collections::BTreeMap<baton_protocol::UpgradeId, super::model::GateState>,
    /// Where finished rounds are sent.
    pub results: tokio::sync::mpsc::UnboundedSender<Round>,
}

impl Rounds {
    /// Folds a finished round into its soak's state (a round of another soak starts afresh).
    pub fn finished(&mut self, round: Round) {
        self.running.remove(&round.upgrade);
        let state =
            self.states
                .entry(round.upgrade.clone())
                .or_insert_with(|| super::model::GateState {
                    batch: round.batch,
                    since: round.since.clone(),
                    failure: None,
                    passed: None,
                });
        if state.batch != round.batch || state.since != round.since {
            *state = super::model::GateState {
                batch: round.batch,
                since: round.since.clone(),
                failure: None,
                passed: None,
            };
        }
        match round.outcome {
            Ok(()) => {
                state.passed = Some(state.passed.map_or(round.started, |p| p.max(round.started)));
            }
            Err(why) => {
                tracing::warn!(upgrade = %round.upgrade, batch = round.batch, %why, "soak gate failed");
                state.failure.get_or_insert(why);
            }
        }
    }
}

impl super::Engine {
    /// Starts a round of gates for every soaking upgrade whose last round is old enough;
    /// forgets the soaks that ended.
    pub(super) fn start_gate_rounds(&mut self) {
        let soaking: Vec<(baton_protocol::UpgradeId, u32, String, Vec<Gate>)> = self
            .seen
            .view
            .upgrades
            .values()
            .map(|u| &u.value)
            .filter(|u| !u.phase.is_terminal())
            .filter_map(|u| {
                let soak = u.soak.as_ref()?;
                Some((
                    u.id.clone(),
                    soak.batch?,
                    soak.since.clone()?,
                    soak.gates.clone(),
                ))
            })
            .filter(|(_, _, _, gates)| !gates.is_empty())
            .collect();
        let rounds = &mut self.gate_rounds;
        rounds
            .states
            .retain(|id, _| soaking.iter().any(|(u, ..)| u == id));
        for (id, batch, since, gates) in soaking {
            let due = rounds
                .last
                .get(&id)
                .is_none_or(|t| t.elapsed() >= GATE_INTERVAL);
            if rounds.running.contains(&id) || !due {
                continue;
            }
            rounds.running.insert(id.clone());
            rounds.last.insert(id.clone(), std::time::Instant::now());
            let results = rounds.results.clone();
            let prometheus = self.config.prometheus.clone();
            self.tasks.spawn(async move {
                let started = std::time::SystemTime::now();
                let outcome = round(gates, prometheus).await;
                let _ = results.send(Round {
                    upgrade: id,
                    batch,
                    since,
                    started,
                    outcome,
                });
            });
        }
    }
}
