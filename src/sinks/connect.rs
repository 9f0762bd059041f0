//! From the `[mqtt]` section to rumqttc's `MqttOptions`: the broker URL, the client id, credentials
//! (a password file or a systemd credential, never the main config) and TLS (rustls on ring, with the
//! configured CA or the system's roots).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::MqttConfig;

/// The credential name looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=mqtt-password:…`)
/// when a username is set and `password_file` is empty.
pub const CREDENTIAL_NAME: &str = "mqtt-password";

/// Largest packet we send: a retained JPEG thumbnail must fit (rumqttc's default is 10 KiB). A row larger
/// than this is logged and skipped, since the broker connection would fail on it every time.
pub const MAX_OUTGOING_PACKET: usize = 8 * 1024 * 1024;
/// Largest packet we accept: we subscribe only to short status payloads.
pub const MAX_INCOMING_PACKET: usize = 64 * 1024;

/// Why the sink cannot start; each message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("mqtt.url: {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("mqtt.password_file: {path}: cannot read: {source}")]
    Password { path: PathBuf, source: std::io::Error },
    #[error("mqtt.password_file: {path}: the file is empty")]
    EmptyPassword { path: PathBuf },
    #[error("mqtt.password_file is set but mqtt.username is empty (MQTT sends a password only with a username)")]
    PasswordWithoutUser,
    #[error("mqtt.ca_file: {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("mqtt: cannot load the system's root certificates: {0}")]
    SystemRoots(String),
    #[error("mqtt: TLS setup: {0}")]
    Tls(rustls::Error),
    #[error("mqtt.topic_prefix: {prefix:?} must not contain the wildcards + or #")]
    Prefix { prefix: String },
    #[error("mqtt: the state store: {0}")]
    Store(#[from] crate::state::StoreError),
}

/// A parsed `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); IPv6 hosts in brackets. Credentials
    /// in the URL are refused: the password belongs in `password_file`.
    pub fn parse(url: &str) -> Result<BrokerUrl, SinkError> {
        let bad = |reason| SinkError::Url { url: url.to_owned(), reason };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("must start with mqtt:// or mqtts://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL: use username and password_file",
            ));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(bad("must be only scheme://host[:port]"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("unexpected text after the IPv6 address")),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port number"))?,
        };
        Ok(BrokerUrl { tls, host: host.to_owned(), port })
    }
}

/// The password: `password_file` if set, else the systemd credential when a username is set (and that
/// credential exists), else none. Trailing newlines are not part of the password.
pub fn password(
    cfg: &MqttConfig,
    credentials_dir: Option<&Path>,
) -> Result<Option<String>, SinkError> {
    let path = if !cfg.password_file.as_os_str().is_empty() {
        if cfg.username.is_empty() {
            return Err(SinkError::PasswordWithoutUser);
        }
        cfg.password_file.clone()
    } else {
        match credentials_dir.map(|dir| dir.join(CREDENTIAL_NAME)) {
            Some(path) if !cfg.username.is_empty() && path.is_file() => path,
            _ => return Ok(None),
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| SinkError::Password { path: path.clone(), source })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(SinkError::EmptyPassword { path });
    }
    Ok(Some(password.to_owned()))
}

/// rustls on ring (installed per config, so no process-wide provider is needed), trusting only
/// `ca_file` when set, else the system's roots.
fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, SinkError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.as_os_str().is_empty() {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let reason = found.errors.first().map_or("none found".into(), |e| e.to_string());
            return Err(SinkError::SystemRoots(reason));
        }
        roots.add_parsable_certificates(found.certs);
    } else {
        let ca = |reason: String| SinkError::Ca { path: ca_file.to_owned(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| ca(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca(e.to_string()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ca("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SinkError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Everything rumqttc needs to connect, with `offline` (retained, QoS 1) as the last will.
pub fn options(
    cfg: &MqttConfig,
    url: &BrokerUrl,
    client_id: &str,
    status_topic: &str,
    keep_alive: Duration,
) -> Result<MqttOptions, SinkError> {
    let mut options = MqttOptions::new(client_id, &url.host, url.port);
    options
        .set_keep_alive(keep_alive)
        // A clean session: the outbox, not the broker or rumqttc, remembers what is undelivered.
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_last_will(LastWill::new(status_topic, "offline", QoS::AtLeastOnce, true));
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    if let Some(password) = password(cfg, credentials_dir.as_deref())? {
        options.set_credentials(&cfg.username, password);
    } else if !cfg.username.is_empty() {
        options.set_credentials(&cfg.username, "");
    }
    if url.tls {
        let tls = tls_config(&cfg.ca_file)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn broker_urls() {
        let b = |tls, host: &str, port| Ok(BrokerUrl { tls, host: host.into(), port });
        assert_eq!(url("mqtt://localhost"), b(false, "localhost", 1883));
        assert_eq!(url("mqtts://broker.lan"), b(true, "broker.lan", 8883));
        assert_eq!(url("mqtt://10.0.0.2:1884/"), b(false, "10.0.0.2", 1884));
        assert_eq!(url("mqtts://[::1]:8884"), b(true, "::1", 8884));
        assert_eq!(url("mqtt://[fe80::1]"), b(false, "fe80::1", 1883));
        for (bad, why) in [
            ("http://x", "must start with"),
            ("mqtt://", "has no host"),
            ("mqtt://h:0", "bad port"),
            ("mqtt://h:99999", "bad port"),
            ("mqtt://u:p@h", "credentials do not belong"),
            ("mqtt://h/topic", "only scheme://host[:port]"),
            ("mqtt://[::1", "unclosed"),
        ] {
            let err = url(bad).expect_err(bad);
            assert!(err.starts_with("mqtt.url: ") && err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_come_from_a_file_or_the_systemd_credential() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "from-systemd\r\n").expect("write");
        let mut cfg = MqttConfig { username: "cam".into(), ..MqttConfig::default() };
        assert_eq!(password(&cfg, None).expect("none"), None);
        assert_eq!(
            password(&cfg, Some(dir.path())).expect("credential"),
            Some("from-systemd".into())
        );
        cfg.password_file = file.clone();
        assert_eq!(password(&cfg, Some(dir.path())).expect("file"), Some("s3cret".into()));

        std::fs::write(&file, "\n").expect("write");
        let err = password(&cfg, None).expect_err("empty").to_string();
        assert!(err.contains("pw: the file is empty"), "{err}");
        cfg.password_file = dir.path().join("missing");
        let err = password(&cfg, None).expect_err("missing").to_string();
        assert!(err.starts_with("mqtt.password_file: ") && err.contains("missing"), "{err}");
        cfg.username.clear();
        assert!(matches!(password(&cfg, None), Err(SinkError::PasswordWithoutUser)));
        // Without a username the credential is not looked at.
        cfg.password_file = PathBuf::new();
        assert_eq!(password(&cfg, Some(dir.path())).expect("none"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let err = tls_config(&ca).expect_err("no certs").to_string();
        assert!(err.starts_with("mqtt.ca_file: ") && err.contains("no PEM certificate"), "{err}");
        let err = tls_config(&dir.path().join("nope.pem")).expect_err("missing").to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
