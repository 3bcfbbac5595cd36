//! The proof that traffic moved: a request through the proxy (the plan's `proof.url`), each
//! on a new connection, whose answer names the backend that served it (in its body, or in a
//! header). Reading the proxy back says what it was told; only a request through it says where
//! clients land. Preflight proves the side it points at answers; the switch waits for the new
//! side's first answer and times it.

use std::time::{Duration, Instant};

use crate::plan::ProxyProof;

use super::ProxyError;

/// Which backend an answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The plan's source.
    Source,
    /// The plan's target.
    Target,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// One request's outcome: the text that names the backend (the header's value, or the body).
async fn ask(client: &reqwest::Client, proof: &ProxyProof) -> Result<String, String> {
    let response = client.get(&proof.url).send().await.map_err(|e| chain(&e))?;
    let status = response.status();
    let text = match &proof.header {
        Some(name) => response
            .headers()
            .get(name.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        None => response.text().await.map_err(|e| chain(&e))?,
    };
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("HTTP {status}: {}", first_line(&text)))
    }
}

/// An error with its causes (reqwest's own message omits why a connection failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(120).collect()
}

/// The side `answer` names, if exactly one.
pub fn side_of(proof: &ProxyProof, answer: &str) -> Option<Side> {
    match (
        answer.contains(&proof.source),
        answer.contains(&proof.target),
    ) {
        (true, false) => Some(Side::Source),
        (false, true) => Some(Side::Target),
        _ => None,
    }
}

/// A client that opens a new connection per request (a pooled one would keep reaching the
/// backend its kept connection was made to) and gives each request `timeout`.
fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())
}

fn refused(proxy: &str, message: String, fix: &str) -> ProxyError {
    ProxyError::Refused {
        proxy: proxy.to_owned(),
        message,
        fix: fix.to_owned(),
    }
}

/// Preflight: one request through the proxy answers, naming `expected`. Changes nothing.
pub async fn check(
    proxy: &str,
    proof: &ProxyProof,
    expected: Side,
    timeout: Duration,
) -> Result<String, ProxyError> {
    let client = client(timeout)
        .map_err(|e| refused(proxy, e, "report this: no HTTP client could be built"))?;
    let answer = ask(&client, proof).await.map_err(|e| {
        refused(
            proxy,
            format!("the proof request {} failed: {e}", proof.url),
            "make `proof.url` a URL that answers through the proxy today",
        )
    })?;
    match side_of(proof, &answer) {
        Some(side) if side == expected => Ok(format!(
            "{} answers from the {} (`{}`)",
            proof.url,
            side.word(),
            first_line(&answer)
        )),
        other => Err(refused(
            proxy,
            format!(
                "{} answered `{}`, which names {} where the route points at the {}",
                proof.url,
                first_line(&answer),
                match other {
                    Some(side) => format!("the {}", side.word()),
                    None => format!(
                        "neither `{}` (source) nor `{}` (target) alone",
                        proof.source, proof.target
                    ),
                },
                expected.word()
            ),
            "correct `proof` (its texts must tell the backends' answers apart), or point the route at the source",
        )),
    }
}

/// After a switch: requests through the proxy until one names `to`, each on a new
/// connection, for at most `within`. Returns the milliseconds from the call to that answer;
/// refuses with the last answers when the new side never answered.
pub async fn wait_for(
    proxy: &str,
    proof: &ProxyProof,
    to: Side,
    per_request: Duration,
    within: Duration,
) -> Result<f64, ProxyError> {
    let started = Instant::now();
    let client = client(per_request.min(within))
        .map_err(|e| refused(proxy, e, "report this: no HTTP client could be built"))?;
    let mut asked = 0u32;
    loop {
        asked += 1;
        let last = match ask(&client, proof).await {
            Ok(answer) if side_of(proof, &answer) == Some(to) => {
                return Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(answer) => format!("`{}`", first_line(&answer)),
            Err(e) => e,
        };
        if started.elapsed() >= within {
            return Err(refused(
                proxy,
                format!(
                    "the route was pointed at the {}, but in {} ms ({asked} requests) no answer through {} named it (`{}`); the last said {last}",
                    to.word(),
                    within.as_millis(),
                    proof.url,
                    match to {
                        Side::Source => &proof.source,
                        Side::Target => &proof.target,
                    }
                ),
                "check that the new backend serves and that `proof` names it; the run puts the route back",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_names_one_side_or_none() {
        let proof = ProxyProof {
            url: "http://127.0.0.1:1/".into(),
            source: "old-host".into(),
            target: "new-host".into(),
            header: None,
            within: None,
        };
        assert_eq!(side_of(&proof, "served by old-host\n"), Some(Side::Source));
        assert_eq!(side_of(&proof, "new-host"), Some(Side::Target));
        assert_eq!(side_of(&proof, "old-host new-host"), None);
        assert_eq!(side_of(&proof, "maintenance"), None);
    }
}
