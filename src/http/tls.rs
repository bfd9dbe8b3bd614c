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
//! chains to it (mTLS). Its subject CN and the chain it presented are
//! handed to the request as a [`ClientCert`] extension, so that the wire
//! layer can require it to name the principal that signed the request, or
//! an XKS store can check it against its own CA and subject.
//!
//! XKS stores with `[mtls]` add their CAs to those the handshake accepts.
//! Without `tls.client_ca_file`, a certificate stays optional at the
//! handshake (TrentService clients without one still connect); the store
//! requires one, and checks it against its CA alone, per request
//! (`auth::xks`).

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
    /// The CAs of the XKS stores with `[mtls]`: accepted at the handshake
    /// as well; on their own, a client certificate is optional.
    pub store_client_ca_files: Vec<PathBuf>,
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
    /// The chain the client presented, leaf first (shared by the
    /// connection's requests).
    pub chain: Arc<[CertificateDer<'static>]>,
}

/// The server's TLS configuration, reloadable.
pub struct Tls {
    /// The files; the store CAs among them are replaced by a reload.
    files: RwLock<TlsFiles>,
    /// A std lock: held only to clone or replace the `Arc`.
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files()).finish()
    }
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = build(&files)?;
        Ok(Tls {
            files: RwLock::new(files),
            current: RwLock::new(config),
        })
    }

    /// Reads the files again; new connections use what they hold from now
    /// on. On error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.files();
        self.reload_with_store_cas(files.store_client_ca_files)
    }

    /// As [`reload`](Self::reload), with the XKS stores' CA files as the
    /// config now names them.
    pub fn reload_with_store_cas(
        &self,
        store_client_ca_files: Vec<PathBuf>,
    ) -> Result<(), TlsError> {
        let files = TlsFiles {
            store_client_ca_files,
            ..self.files()
        };
        let config = build(&files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = files;
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

    pub fn files(&self) -> TlsFiles {
        self.files.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The client certificate of an established connection (mTLS only).
pub fn client_cert_of(conn: &ServerConnection) -> Option<ClientCert> {
    let chain = conn.peer_certificates()?;
    let cert = chain.first()?;
    let subject_cn = x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        });
    Some(ClientCert {
        subject_cn,
        chain: chain
            .iter()
            .map(|c| c.clone().into_owned())
            .collect::<Vec<_>>()
            .into(),
    })
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
    let builder = if files.client_ca_file.is_none() && files.store_client_ca_files.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(client_verifier(files, provider)?)
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

/// Accepts a client certificate that chains to a CA in any of the client
/// CA files: required with `tls.client_ca_file`, else optional.
fn client_verifier(
    files: &TlsFiles,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let paths = files
        .client_ca_file
        .iter()
        .chain(files.store_client_ca_files.iter());
    for path in paths.clone() {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::ClientCa {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
    }
    let named = paths
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if files.client_ca_file.is_some() {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| TlsError::ClientCa {
        path: PathBuf::from(named),
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
            store_client_ca_files: Vec::new(),
        };
        let err = Tls::load(files).unwrap_err().to_string();
        assert!(err.contains("empty.pem"), "{err}");
        assert!(err.contains("no certificate"), "{err}");
    }
}
