//! TLS for the serving loop: rustls, with the certificate chain, the key
//! and the optional client CA bundle read from PEM files.
//!
//! The server configuration is held behind a lock and swapped whole by
//! [`Tls::reload`] (on SIGHUP): every new connection takes the current one
//! at accept, so an open connection keeps the configuration it was set up
//! with and a reload never drops it. A reload that fails leaves the old
//! configuration in place.
//!
//! With a client CA bundle every client must present a certificate that
//! chains to it (mTLS). Its subject CN is handed to the request as a
//! [`ClientCert`] extension, so that the wire layer can require it to name
//! the principal that signed the request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConfig, ServerConnection, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The PEM files TLS is configured from (the `[tls]` config table).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain_file: PathBuf,
    pub private_key_file: PathBuf,
    /// Client certificates are required and verified against this bundle.
    pub client_ca_file: Option<PathBuf>,
}

/// Why a TLS configuration could not be built. Names files, never key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("client CA bundle {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("the certificate chain and private key do not form a TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The client's certificate as the request sees it (a request extension
/// on mTLS connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The first common name of the certificate's subject, if it has one.
    pub subject_cn: Option<String>,
}

/// The server's TLS configuration, reloadable.
pub struct Tls {
    files: TlsFiles,
    /// A std lock: held only to clone or replace the `Arc`.
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = build(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again; new connections use what they hold from now
    /// on. On error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The client certificate of an established connection (mTLS only).
pub fn client_cert_of(conn: &ServerConnection) -> Option<ClientCert> {
    let cert = conn.peer_certificates()?.first()?;
    let subject_cn = x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        });
    Some(ClientCert { subject_cn })
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    // ring, named explicitly: the process may link more than one provider
    // (the tests' AWS SDK brings aws-lc-rs), and then rustls has no default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert_chain_file)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.private_key_file).map_err(|e| TlsError::File {
            path: files.private_key_file.clone(),
            message: format!("no usable PEM private key: {e}"),
        })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca_file {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |e: rustls_pki_types::pem::Error| TlsError::File {
        path: path.to_owned(),
        message: format!("cannot read PEM certificates: {e}"),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Requires a client certificate that chains to a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            cert_chain_file: empty.clone(),
            private_key_file: dir.path().join("missing.pem"),
            client_ca_file: None,
        };
        let err = Tls::load(files).unwrap_err().to_string();
        assert!(err.contains("empty.pem"), "{err}");
        assert!(err.contains("no certificate"), "{err}");
    }
}
