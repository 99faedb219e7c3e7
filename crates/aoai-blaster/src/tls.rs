//! Which certificate authorities our TLS clients trust, in one place for both of them, and
//! rustls's one process-wide crypto provider.
//!
//! - HTTPS to the deployments: the webpki roots (Mozilla's list, compiled in) plus, when
//!   `SSL_CERT_FILE` names a PEM file, the CAs in it (a gateway with a private CA: APIM with an
//!   internal certificate, a TLS-inspecting proxy, a local stand-in). ALPN offers
//!   `http/1.1` alone (awc's default offers `h2` first; measured slower, see README).
//! - Redis over TLS (`rediss://`): the system's CAs, or, when `SSL_CERT_FILE` is set, the CAs
//!   in that file instead (OpenSSL's convention, which the Redis client followed before).
//!
//! The file is read and checked once, at start ([`TrustedCas::from_env`]): a missing or
//! unreadable file, or one holding no certificate, stops the start with a [`TlsError`] that
//! names the variable and the fix, instead of every request failing later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The environment variable naming a PEM file of CAs to trust beside the webpki roots.
pub const CERT_FILE_ENV: &str = "SSL_CERT_FILE";

/// A CA file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error(
        "{source_name} names {path:?}, which cannot be read ({reason}); point it at a PEM file \
         of the CA certificates to trust, or unset it"
    )]
    Unreadable {
        /// Where the path came from (`SSL_CERT_FILE`, or the caller's own).
        source_name: String,
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file holds no PEM certificate, or one that does not parse.
    #[error(
        "{source_name} names {path:?}, which {problem}; it must hold the CA certificates to \
         trust as PEM (`-----BEGIN CERTIFICATE-----` blocks), or unset it"
    )]
    NoCertificate {
        /// Where the path came from.
        source_name: String,
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The CAs a TLS client trusts: the webpki roots, plus those of one PEM file when given.
/// [`Default`] is the webpki roots alone.
#[derive(Debug, Clone, Default)]
pub struct TrustedCas {
    file: Option<CaFile>,
}

/// A checked PEM file of CAs.
#[derive(Debug, Clone)]
struct CaFile {
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

impl TrustedCas {
    /// The webpki roots, plus the CAs of the file `SSL_CERT_FILE` names when it is set and
    /// not empty.
    pub fn from_env() -> Result<TrustedCas, TlsError> {
        match std::env::var_os(CERT_FILE_ENV).filter(|value| !value.is_empty()) {
            Some(path) => Self::load(Path::new(&path), CERT_FILE_ENV),
            None => Ok(TrustedCas::default()),
        }
    }

    /// The webpki roots, plus the CAs of the PEM file at `path` (whatever `SSL_CERT_FILE`
    /// says).
    pub fn with_pem_file(path: impl AsRef<Path>) -> Result<TrustedCas, TlsError> {
        Self::load(path.as_ref(), "TrustedCas::with_pem_file")
    }

    fn load(path: &Path, source_name: &str) -> Result<TrustedCas, TlsError> {
        let no_certificate = |problem: String| TlsError::NoCertificate {
            source_name: source_name.to_owned(),
            path: path.to_owned(),
            problem,
        };
        let pem = std::fs::read(path).map_err(|error| TlsError::Unreadable {
            source_name: source_name.to_owned(),
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| no_certificate(format!("is not valid PEM ({error})")))?;
        if certs.is_empty() {
            return Err(no_certificate("holds no certificate".to_owned()));
        }
        let mut store = RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|error| {
                no_certificate(format!(
                    "holds a certificate (#{}) that does not parse ({error})",
                    index + 1
                ))
            })?;
        }
        Ok(TrustedCas {
            file: Some(CaFile { pem, certs }),
        })
    }

    /// The rustls config of the deployments' HTTPS clients (for awc's
    /// `Connector::rustls_0_23`): these CAs, ALPN `http/1.1`.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        install_crypto_provider();
        let mut roots = actix_tls::connect::rustls_0_23::webpki_roots_cert_store();
        if let Some(file) = &self.file {
            // Checked when loaded: every certificate parses.
            let (_added, _ignored) = roots.add_parsable_certificates(file.certs.iter().cloned());
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only, not awc's `h2` first: through awc, HTTP/2 took twice the client CPU
        // per job and halved the jobs/s of HTTP/1.1 over TLS (README, "TLS").
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The file's CAs for a `rediss://` client, replacing the system's (`None`: no file, the
    /// Redis client loads the system's).
    pub(crate) fn redis_certificates(&self) -> Option<redis::TlsCertificates> {
        self.file.as_ref().map(|file| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(file.pem.clone()),
        })
    }

    /// How many CAs the file added (0 without one).
    pub fn file_cas(&self) -> usize {
        self.file.as_ref().map_or(0, |file| file.certs.len())
    }
}

/// Installs aws-lc-rs as rustls's crypto provider, once. rustls needs one per process, and when
/// another crate also enabled `ring` it cannot pick one by itself and panics; installing ours
/// before the first TLS config is built makes the choice (a second install by anyone is
/// refused harmlessly).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(contents: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn a_missing_file_names_the_path_and_the_fix() {
        let error = TrustedCas::with_pem_file("/nonexistent/ca.pem").unwrap_err();
        assert!(matches!(error, TlsError::Unreadable { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "TrustedCas::with_pem_file names \"/nonexistent/ca.pem\", which cannot be read"
            ),
            "{text}"
        );
        assert!(text.contains("point it at a PEM file"), "{text}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = file_with(b"not a certificate\n");
        let error = TrustedCas::with_pem_file(file.path()).unwrap_err();
        assert!(
            error.to_string().contains("holds no certificate"),
            "{error}"
        );
        assert!(
            error.to_string().contains("-----BEGIN CERTIFICATE-----"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_refused() {
        // Valid PEM and base64, but not DER of a certificate.
        let file = file_with(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let error = TrustedCas::with_pem_file(file.path()).unwrap_err();
        assert!(
            error.to_string().contains("(#1) that does not parse"),
            "{error}"
        );
    }

    #[test]
    fn a_ca_file_adds_its_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let made = aoai_testkit::TestCertificates::make(dir.path()).expect("certificates");
        let trusted = TrustedCas::with_pem_file(&made.ca).expect("the CA loads");
        assert_eq!(trusted.file_cas(), 1);
        let redis = trusted.redis_certificates().expect("the CA for Redis");
        assert_eq!(redis.root_cert, Some(std::fs::read(&made.ca).unwrap()));
        let webpki = actix_tls::connect::rustls_0_23::webpki_roots_cert_store().len();
        assert!(webpki > 100, "{webpki}");
        let config = trusted.client_config();
        assert_eq!(config.alpn_protocols.len(), 1);
    }

    #[test]
    fn the_https_config_offers_http1_only() {
        let config = TrustedCas::default().client_config();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(TrustedCas::default().file_cas(), 0);
        assert!(TrustedCas::default().redis_certificates().is_none());
    }
}
