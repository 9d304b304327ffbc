//! AMQPS: the TLS side of the AMQP listener (RabbitMQ's `listeners.ssl` with `ssl_options`),
//! built from PEM files. With a CA file, client certificates are verified when a client
//! presents one (RabbitMQ's `verify_peer` without `fail_if_no_peer_cert`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::AmqpsConfig;

/// The acceptor for the AMQPS listener; errors name the file that is wrong.
pub(crate) fn acceptor(config: &AmqpsConfig) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = certificates(&config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .with_context(|| format!("no private key in {}", config.key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &config.ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates_of(ca_file)? {
                roots
                    .add(certificate)
                    .with_context(|| format!("a CA certificate in {}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("client verification with {}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certificates, key)
        .with_context(|| format!("the certificate and key in {}", config.cert_file.display()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn certificates(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let found = certificates_of(file)?;
    anyhow::ensure!(!found.is_empty(), "no certificate in {}", file.display());
    Ok(found)
}

fn certificates_of(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("a certificate in {} is not valid PEM", file.display()))
}
