//! HTTPS listeners: the rustls server config built from `tls:` ([`TlsFiles`]).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::SimError;

/// The server config for `files`: their certificate chain and key, aws-lc-rs's safe defaults
/// (no process-wide provider needed). actix-web adds ALPN `h2` and `http/1.1`.
pub(crate) fn server_config(files: &TlsFiles) -> Result<ServerConfig, SimError> {
    let invalid = |key: &str, path: &std::path::Path, problem: String| {
        SimError::Invalid(format!(
            "tls.{key}: {:?} {problem}; give a PEM file (`--tls-cert`/`--tls-key`)",
            path.display().to_string()
        ))
    };
    let cert_path = files.cert_file.as_path();
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                "cert_file",
                cert_path,
                format!("cannot be read as PEM ({e})"),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            "cert_file",
            cert_path,
            "holds no certificate".to_owned(),
        ));
    }
    let key_path = files.key_file.as_path();
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| invalid("key_file", key_path, format!("holds no private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            invalid(
                "key_file",
                key_path,
                format!("does not go with tls.cert_file ({e})"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(files: &TlsFiles) -> String {
        server_config(files).expect_err("refused").to_string()
    }

    #[test]
    fn each_bad_file_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let made = aoai_testkit::TestCertificates::make(dir.path()).expect("certificates");
        let good = TlsFiles {
            cert_file: made.cert.clone(),
            key_file: made.key.clone(),
        };
        assert!(server_config(&good).is_ok());

        let missing = dir.path().join("missing.pem");
        let text = error_of(&TlsFiles {
            cert_file: missing.clone(),
            ..good.clone()
        });
        assert!(text.contains("tls.cert_file: "), "{text}");
        assert!(text.contains("cannot be read as PEM"), "{text}");

        // The key where the certificate should be: PEM, but no certificate in it.
        let text = error_of(&TlsFiles {
            cert_file: made.key.clone(),
            ..good.clone()
        });
        assert!(
            text.contains("tls.cert_file: ") && text.contains("holds no certificate"),
            "{text}"
        );

        let text = error_of(&TlsFiles {
            key_file: made.cert.clone(),
            ..good.clone()
        });
        assert!(
            text.contains("tls.key_file: ") && text.contains("holds no private key"),
            "{text}"
        );

        // The CA's key does not go with the server's certificate.
        let text = error_of(&TlsFiles {
            key_file: dir.path().join("ca.key"),
            ..good
        });
        assert!(text.contains("does not go with tls.cert_file"), "{text}");
    }

    #[test]
    fn flags_set_the_files_and_the_address() {
        let mut config = crate::SimConfig::default();
        crate::ListenFlags {
            bind: Some("127.0.0.1:9".to_owned()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
        }
        .apply(&mut config);
        assert_eq!(config.bind, "127.0.0.1:9");
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into(),
            })
        );
        crate::ListenFlags::default().apply(&mut config);
        assert_eq!(config.bind, "127.0.0.1:9", "absent flags change nothing");
    }
}
