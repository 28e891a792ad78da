//! TLS to NATS against a real nats-server whose certificate comes from a CA this test
//! makes (with `openssl`): a client that trusts the CA and shows its own certificate
//! connects and publishes; one without the CA, or without a client certificate when
//! the server verifies clients, is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cauce_nats::{ConnectOptions, Tls, connect};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|err| panic!("openssl is missing ({err}); run ./ops/setup"));
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
fn make_certificates(dir: &Path) {
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
            "-days",
            "2",
            "-subj",
            "/CN=cauce test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    for (name, extensions) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=cauce test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nats-server with TLS that verifies clients, on a free port.
fn start_server(dir: &Path) -> (Server, u16) {
    let binary = cauce_nats::server::find_binary().unwrap_or_else(|err| panic!("{err}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = |name: &str| serde_json::to_string(&dir.join(name).display().to_string()).unwrap();
    let config = format!(
        "listen: 127.0.0.1:{port}\ntls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n}}\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem"),
    );
    std::fs::write(dir.join("nats.conf"), config).unwrap();
    // killed and waited for on drop, whatever happens next
    let server = Server(
        Command::new(binary)
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if cauce_nats::server::answers("127.0.0.1", port) {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nats-server with TLS did not start");
}

fn options(port: u16, tls: Tls) -> ConnectOptions {
    let mut options = ConnectOptions::new(&format!("tls://127.0.0.1:{port}"), "cauce-tls-test");
    options.tls = tls;
    options.connect_timeout = Duration::from_secs(3);
    options
}

#[tokio::test]
async fn a_client_with_the_ca_and_its_certificate_connects_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (_server, port) = start_server(dir.path());
    let file = |name: &str| -> Option<PathBuf> { Some(dir.path().join(name)) };

    let client = connect(&options(
        port,
        Tls {
            ca: file("ca.pem"),
            client_cert: file("client.pem"),
            client_key: file("client.key"),
        },
    ))
    .await
    .expect("mutual TLS with the test CA");
    client
        .publish("cauce.tls.test", "over tls".into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let no_client_certificate = Tls {
        ca: file("ca.pem"),
        ..Tls::default()
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        connect(&options(port, no_client_certificate)),
    )
    .await
    .expect("an answer, not a hang");
    assert!(refused.is_err(), "the server verifies clients");
    // the system's roots do not know the test CA
    let no_ca = Tls {
        client_cert: file("client.pem"),
        client_key: file("client.key"),
        ..Tls::default()
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), connect(&options(port, no_ca)))
        .await
        .expect("an answer, not a hang");
    assert!(
        refused.is_err(),
        "the test CA is not among the system's roots"
    );
    let half = Tls {
        client_cert: file("client.pem"),
        ..Tls::default()
    };
    let err = connect(&options(port, half)).await.unwrap_err();
    assert_eq!(err.kind(), "nats_tls", "{err}");
}
