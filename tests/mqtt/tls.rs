//! mqtts:// with a CA and server certificate made by `openssl` for the test, and password
//! authentication: it connects; a wrong password or an unknown CA is a clear error and the events stay
//! in the outbox.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edge_change::config::MqttConfig;

use crate::harness::{config, depth, fast, fill, temp, topic, Broker, Sink};

const WITHIN: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A broker with TLS (server certificate for 127.0.0.1 signed by `ca`) and one user, `cam`/`s3cret`.
fn tls_broker() -> Broker {
    let dir = temp();
    let d = dir.path();
    make_ca(d, "ca");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    let passwd = d.join("passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["cam", "s3cret"])
        .output()
        .expect("run mosquitto_passwd");
    assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
    let settings = format!(
        "allow_anonymous false\npersistence false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        passwd.display(),
        d.join("ca.pem").display(),
        d.join("server.pem").display(),
        d.join("server.key").display(),
    );
    Broker::in_dir(dir, &settings)
}

fn tls_config(broker: &Broker, password: &str, ca: &Path) -> MqttConfig {
    let password_file = broker.path(&format!("password-{password}"));
    std::fs::write(&password_file, format!("{password}\n")).expect("write password");
    MqttConfig {
        username: "cam".into(),
        password_file,
        ca_file: ca.to_owned(),
        ..config(&format!("mqtts://127.0.0.1:{}", broker.port))
    }
}

#[tokio::test]
async fn tls_with_a_password_delivers() {
    let broker = tls_broker();
    let state = temp();
    fill(state.path(), "north", 3, &["change"]);
    let sink =
        Sink::start(&tls_config(&broker, "s3cret", &broker.path("ca.pem")), state.path(), fast());
    crate::delivery::eventually_empty(state.path()).await;
    assert!(sink.status().connected);

    // A TLS subscriber with the same credentials reads the retained state.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-u", "cam", "-P", "s3cret"])
        .arg("--cafile")
        .arg(broker.path("ca.pem"))
        .args(["-t", &topic("sites/north/state"), "-C", "1", "-W", "10"])
        .output()
        .await
        .expect("run mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"capture\":\"002.png\""), "{text}");
    sink.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_not_authorized_and_events_stay() {
    let broker = tls_broker();
    let state = temp();
    fill(state.path(), "north", 3, &["change"]);
    let sink =
        Sink::start(&tls_config(&broker, "wrong", &broker.path("ca.pem")), state.path(), fast());
    crate::harness::eventually(WITHIN, "a connection error", || sink.status().last_error.is_some())
        .await;
    let error = sink.status().last_error.expect("error");
    assert!(error.starts_with("not authorized"), "{error}");
    assert_eq!(depth(state.path()), 3);
    assert!(!sink.status().connected);
    sink.stop().await;
}

#[tokio::test]
async fn an_unknown_ca_is_a_tls_error_and_events_stay() {
    let broker = tls_broker();
    let other = temp();
    make_ca(other.path(), "other");
    let state = temp();
    fill(state.path(), "north", 2, &["change"]);
    let cfg = tls_config(&broker, "s3cret", &other.path().join("other.pem"));
    let sink = Sink::start(&cfg, state.path(), fast());
    crate::harness::eventually(WITHIN, "a connection error", || sink.status().last_error.is_some())
        .await;
    let error = sink.status().last_error.expect("error");
    assert!(error.starts_with("TLS error") && error.contains("UnknownIssuer"), "{error}");
    assert_eq!(depth(state.path()), 2);
    sink.stop().await;
}
