//! The `http` source: GETs a snapshot URL every interval, with a timeout over the whole exchange, the
//! status checked and the body's size capped. ureq is blocking, so each request runs on tokio's blocking
//! pool; it ends by itself at the timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::capture::{Capture, CaptureData};
use crate::config::{HttpSource, Problem};
use crate::shutdown::Shutdown;
use crate::sources::{durations, every, SourceError, SourceStats, MAX_CAPTURE_BYTES};

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// The configured source's name, also the site.
    pub source: String,
    pub url: String,
    pub interval: Duration,
    /// For the whole exchange: connecting, redirects and reading the body.
    pub timeout: Duration,
    /// A larger body (by Content-Length, or as read) is refused.
    pub max_bytes: u64,
}

impl HttpSettings {
    pub fn from_config(name: &str, config: &HttpSource) -> Result<HttpSettings, SourceError> {
        let mut problems = Vec::new();
        let scheme_ok = config.url.starts_with("http://") || config.url.starts_with("https://");
        if !scheme_ok || config.url.parse::<ureq::http::Uri>().is_err() {
            problems.push(Problem {
                key: format!("sources.{name}.url"),
                message: format!("{:?} is not an http:// or https:// URL", config.url),
            });
        }
        let (interval, timeout) = durations(name, &config.interval, &config.timeout, &mut problems);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        Ok(HttpSettings {
            source: name.to_owned(),
            url: config.url.clone(),
            interval,
            timeout,
            max_bytes: MAX_CAPTURE_BYTES,
        })
    }
}

/// GETs the URL every interval until shutdown. Queue policy: see [`super::every`] (a full queue skips
/// the tick and counts it in `stats.skipped_ticks`).
pub async fn run(
    settings: HttpSettings,
    tx: mpsc::Sender<Capture>,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
) {
    tracing::info!(source = %settings.source, url = %settings.url, "http source started");
    let agent = agent(&settings);
    every(settings.interval, tx, stats, shutdown, |taken_at| {
        let agent = agent.clone();
        let settings = &settings;
        async move {
            Capture {
                site: settings.source.clone(),
                taken_at,
                name: settings.url.clone(),
                data: take(&agent, settings).await,
                source: settings.source.clone(),
            }
        }
    })
    .await
}

/// One client per source, so that a camera's keep-alive connection is reused between ticks.
pub fn agent(settings: &HttpSettings) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .http_status_as_error(false)
        .max_redirects(5)
        .user_agent(concat!("edge-change/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One GET: the body, or why there is none.
pub async fn take(agent: &ureq::Agent, settings: &HttpSettings) -> CaptureData {
    let agent = agent.clone();
    let (url, max) = (settings.url.clone(), settings.max_bytes);
    let task = tokio::task::spawn_blocking(move || get(&agent, &url, max));
    match task.await {
        Ok(Ok(bytes)) => CaptureData::Bytes(bytes),
        Ok(Err(reason)) => CaptureData::Failed(format!("{}: {reason}", settings.url)),
        Err(e) => CaptureData::Failed(format!("{}: request task failed: {e}", settings.url)),
    }
}

fn get(agent: &ureq::Agent, url: &str, max: u64) -> Result<Vec<u8>, String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    if let Some(length) = response.body().content_length().filter(|&l| l > max) {
        return Err(format!("body of {length} bytes is larger than {max}"));
    }
    let body = response.body_mut().with_config().limit(max).read_to_vec().map_err(|e| match e {
        ureq::Error::BodyExceedsLimit(_) => format!("body is larger than {max} bytes"),
        e => format!("cannot read the body: {e}"),
    })?;
    if body.is_empty() {
        return Err("empty body".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_config_check_the_url_and_durations() {
        let config = HttpSource {
            url: "ftp://camera/snap.jpg".into(),
            interval: "5m".into(),
            timeout: "0s".into(),
            mask: Default::default(),
        };
        let err = HttpSettings::from_config("gate", &config).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "sources.gate.url: \"ftp://camera/snap.jpg\" is not an http:// or https:// URL; \
             sources.gate.timeout: must be longer than zero"
        );
        let good = HttpSource { url: "http://127.0.0.1:8080/snap.jpg".into(), ..config };
        let good = HttpSource { timeout: "10s".into(), ..good };
        let settings = HttpSettings::from_config("gate", &good).expect("valid");
        assert_eq!(
            (settings.interval, settings.timeout),
            (Duration::from_secs(300), Duration::from_secs(10))
        );
    }
}
