//! [`TestCertificates`]: a CA of a test's own and a server certificate it signed, made with
//! `openssl`, for TLS servers a test starts (Redis, the simulator).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::redis_server::{install, on_path};

/// Why the test certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// No `openssl`, and this process may not install it.
    #[error(
        "openssl is not installed and {why}; install it with `sudo apt-get install -y openssl` \
         (Debian/Ubuntu)"
    )]
    OpensslMissing {
        /// Why it could not be installed here.
        why: String,
    },
    /// `openssl` failed.
    #[error("openssl could not make the test certificates ({step}): {output}")]
    Openssl {
        /// Which step failed.
        step: &'static str,
        /// What it printed.
        output: String,
    },
    /// Writing a file or running `openssl` failed.
    #[error("test certificates ({context}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// PEM files in a directory the caller owns: a CA (`ca.crt`, for `SSL_CERT_FILE`) and a
/// server certificate it signed for `localhost` and `127.0.0.1` (`server.crt`, its key
/// `server.key`); P-256 keys, valid two days.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

impl TestCertificates {
    /// Makes the certificates in `dir` with `openssl` (installed first when missing and this
    /// process may: root, or password-less sudo).
    pub fn make(dir: &Path) -> Result<TestCertificates, CertificateError> {
        let openssl = openssl()?;
        let path = |name: &str| dir.join(name);
        let (ca, ca_key) = (path("ca.crt"), path("ca.key"));
        let (cert, key, csr, ext) = (
            path("server.crt"),
            path("server.key"),
            path("server.csr"),
            path("server.ext"),
        );
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .map_err(|source| CertificateError::Io {
            context: "writing the certificate extensions",
            source,
        })?;
        let run = |step: &'static str, args: &[&OsStr]| {
            let output = Command::new(&openssl)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| CertificateError::Io {
                    context: "running openssl",
                    source,
                })?;
            if output.status.success() {
                Ok(())
            } else {
                Err(CertificateError::Openssl {
                    step,
                    output: String::from_utf8_lossy(&output.stderr).into_owned(),
                })
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let os = |s: &'static str| OsStr::new(s);
        let mut ca_args: Vec<&OsStr> = vec![os("req"), os("-x509")];
        ca_args.extend(ec.map(os));
        ca_args.extend(
            [
                "-days",
                "2",
                "-subj",
                "/CN=aoai-testkit-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ]
            .map(os),
        );
        ca_args.extend([
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        run("the CA", &ca_args)?;
        let mut req_args: Vec<&OsStr> = vec![os("req")];
        req_args.extend(ec.map(os));
        req_args.extend([os("-subj"), os("/CN=localhost")]);
        req_args.extend([os("-keyout"), key.as_os_str(), os("-out"), csr.as_os_str()]);
        run("the server's request", &req_args)?;
        run(
            "the server's certificate",
            &[
                os("x509"),
                os("-req"),
                os("-in"),
                csr.as_os_str(),
                os("-CA"),
                ca.as_os_str(),
                os("-CAkey"),
                ca_key.as_os_str(),
                os("-CAcreateserial"),
                os("-days"),
                os("2"),
                os("-extfile"),
                ext.as_os_str(),
                os("-out"),
                cert.as_os_str(),
            ],
        )?;
        Ok(TestCertificates { ca, cert, key })
    }
}

/// `openssl` on `PATH`, installed first when missing and this process may.
fn openssl() -> Result<PathBuf, CertificateError> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    if let Some(path) = on_path("openssl") {
        return Ok(path);
    }
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if on_path("openssl").is_none() {
        install("openssl").map_err(|why| CertificateError::OpensslMissing { why })?;
    }
    on_path("openssl").ok_or_else(|| CertificateError::OpensslMissing {
        why: "`apt-get install -y openssl` ran but put no openssl on PATH".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_is_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let made = TestCertificates::make(dir.path()).expect("certificates made");
        let verified = Command::new(openssl().unwrap())
            .arg("verify")
            .arg("-CAfile")
            .arg(&made.ca)
            .arg(&made.cert)
            .output()
            .unwrap();
        assert!(verified.status.success(), "{verified:?}");
        let key = std::fs::read_to_string(&made.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    }
}
