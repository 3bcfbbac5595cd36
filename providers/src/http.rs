//! The HTTP client every API adapter shares: authentication header, JSON bodies, and retries of
//! 429 and 5xx answers with exponential backoff that honours `Retry-After`.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::{ProviderError, ProviderKind, Secret};

/// How a request is authenticated. The secret goes into a header and nowhere else.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Token <token>` (deSEC).
    Token(Secret),
    /// A custom header holding the secret (PowerDNS `X-API-Key`).
    Header(&'static str, Secret),
    /// The request builder signs each request itself (Route 53).
    None,
}

/// When and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub attempts: u32,
    /// Wait before the second attempt when the server gives no `Retry-After`; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait accepted; a `Retry-After` beyond it ends the retries.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// A final HTTP answer (after retries).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    provider: ProviderKind,
    method: Method,
    path: String,
}

impl Answer {
    /// Fails unless the status is 2xx.
    pub fn success(self) -> Result<Answer, ProviderError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ProviderError::Http {
                provider: self.provider,
                method: self.method.to_string(),
                path: self.path.clone(),
                status: self.status.as_u16(),
                detail: excerpt(&self.body),
            })
        }
    }

    /// Fails with [`ProviderError::ZoneNotFound`] on 404 (the zone's own URL or a path under
    /// it), else hands the answer on.
    pub fn zone_exists(self, zone: &str) -> Result<Answer, ProviderError> {
        if self.status == StatusCode::NOT_FOUND {
            return Err(ProviderError::ZoneNotFound {
                provider: self.provider,
                zone: zone.to_owned(),
            });
        }
        Ok(self)
    }

    /// Decodes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| self.decode_error(e))
    }

    /// A decode error naming this request.
    pub fn decode_error(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Decode {
            provider: self.provider,
            what: format!("{} {}", self.method, self.path),
            detail: e.to_string(),
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// At most 300 characters of an error body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// Whether an answer should be retried: 429 and 5xx by default.
pub type RetryDecision = fn(StatusCode, &[u8]) -> bool;

fn retry_429_and_5xx(status: StatusCode, _body: &[u8]) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// One provider's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    provider: ProviderKind,
    client: reqwest::Client,
    base: String,
    auth: Auth,
    retry: RetryPolicy,
    retryable: RetryDecision,
}

impl Api {
    /// A client for `base` (e.g. `https://api.cloudflare.com/client/v4`).
    pub fn new(provider: ProviderKind, base: &str, auth: Auth) -> Result<Api, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Transport {
                provider,
                what: base.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(Api {
            provider,
            client,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            retry: RetryPolicy::default(),
            retryable: retry_429_and_5xx,
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Api {
        self.retry = retry;
        self
    }

    /// Replaces the decision which answers are retried.
    pub fn with_retryable(mut self, retryable: RetryDecision) -> Api {
        self.retryable = retryable;
        self
    }

    /// The provider this client talks to.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional JSON body and returns the final answer. 401 and 403
    /// become [`ProviderError::Auth`]; other statuses are left to the caller.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ProviderError> {
        let url = self.url(path);
        self.send_built(method.clone(), path, || {
            let mut request = self.client.request(method.clone(), &url).query(query);
            request = match &self.auth {
                Auth::Bearer(token) => request.bearer_auth(token.expose()),
                Auth::Token(token) => {
                    request.header("Authorization", format!("Token {}", token.expose()))
                }
                Auth::Header(name, token) => request.header(*name, token.expose()),
                Auth::None => request,
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            request.build().map_err(|e| self.transport(path, e))
        })
        .await
    }

    /// Sends `GET path` and decodes a 2xx JSON answer.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        self.send(Method::GET, path, query, None)
            .await?
            .success()?
            .json()
    }

    /// Sends a request built anew for each attempt by `build` (so signatures carry a fresh
    /// date), retrying per the policy.
    pub async fn send_built(
        &self,
        method: Method,
        path: &str,
        build: impl Fn() -> Result<reqwest::Request, ProviderError>,
    ) -> Result<Answer, ProviderError> {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            let response = self
                .client
                .execute(build()?)
                .await
                .map_err(|e| self.transport(path, e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.transport(path, e))?
                .to_vec();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(ProviderError::Auth {
                    provider: self.provider,
                    detail: format!(
                        "HTTP {} from {method} {path}: {}",
                        status.as_u16(),
                        excerpt(&body)
                    ),
                });
            }
            if (self.retryable)(status, &body) {
                let wait = retry_after(&headers).unwrap_or(backoff);
                if attempt >= self.retry.attempts || wait > self.retry.max_wait {
                    return Err(ProviderError::RetriesExhausted {
                        provider: self.provider,
                        method: method.to_string(),
                        path: path.to_owned(),
                        attempts: attempt,
                        status: status.as_u16(),
                    });
                }
                tracing::warn!(
                    provider = %self.provider, %method, path, status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64, attempt, "provider asked to retry"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(self.retry.max_wait);
                attempt += 1;
                continue;
            }
            return Ok(Answer {
                status,
                headers,
                body,
                provider: self.provider,
                method,
                path: path.to_owned(),
            });
        }
    }

    fn transport(&self, path: &str, e: reqwest::Error) -> ProviderError {
        ProviderError::Transport {
            provider: self.provider,
            what: self.url(path),
            detail: e.without_url().to_string(),
        }
    }
}

/// `Retry-After` as a delay: delta-seconds, or an HTTP date in the future.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_bodies_are_shortened_to_one_line() {
        let long = "x ".repeat(400);
        assert!(excerpt(long.as_bytes()).chars().count() <= 301);
        assert_eq!(excerpt(b"a\n  b"), "a b");
    }
}
