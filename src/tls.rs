//! TLS with rustls (ring provider; no OpenSSL in the library): client configurations built from
//! [`TlsConfig`] (cached per process, so reconnects resume sessions and the system trust store is
//! read once), the name a server's certificate is verified against, and errors an operator can
//! act on. The record layer itself runs in `conn.rs` over our own non-blocking socket, so every
//! wait stays bounded by the connection's deadline and writes keep `MSG_NOSIGNAL`.

use crate::config::TlsConfig;
use crate::error::{Error, ErrorKind, Result};
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Once};

/// Size of the ciphertext buffer one socket read fills (rustls alone reads 4 KiB at a time).
const CIPHER_BUF: usize = 256 << 10;
/// Plaintext rustls may hold encrypted and unsent; a vectored write is taken in pieces this big.
const SEND_LIMIT: usize = 256 << 10;

/// One TLS session over a connection's socket: rustls' state and the ciphertext read but not yet
/// given to rustls.
pub struct TlsStream {
    pub conn: ClientConnection,
    pub cipher: Box<[u8]>,
    pub pos: usize,
    pub end: usize,
    /// The name the certificate is verified against, for messages.
    pub name: String,
}

impl TlsStream {
    /// A client session to `host` (its certificate verified against `tls.server_name`, else
    /// `host`: a DNS name or an IP address).
    pub fn new(tls: &TlsConfig, host: &str) -> Result<TlsStream> {
        let config = client_config(tls)?;
        let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            Error::invalid_config(format!("'{name}' is not a valid TLS server name (set VALKEY_TLS_SERVER_NAME or the tls_server_name option)"))
        })?;
        let mut conn = ClientConnection::new(config, server_name)
            .map_err(|e| Error::new(ErrorKind::Tls, format!("cannot start a TLS session with {name}: {e}")))?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(TlsStream { conn, cipher: vec![0; CIPHER_BUF].into_boxed_slice(), pos: 0, end: 0, name })
    }
}

/// Client configurations already built, by settings (rebuilt only when the settings change).
static CONFIGS: Mutex<Vec<(TlsConfig, Arc<ClientConfig>)>> = Mutex::new(Vec::new());

fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>> {
    if let Some((_, c)) = CONFIGS.lock().iter().find(|(t, _)| t == tls) {
        return Ok(c.clone());
    }
    let config = Arc::new(build(tls)?);
    let mut configs = CONFIGS.lock();
    if configs.len() >= 16 {
        configs.remove(0);
    }
    configs.push((tls.clone(), config.clone()));
    Ok(config)
}

/// ring's suites with AES-128-GCM first: as safe as AES-256 for this use and ~30% cheaper per
/// byte (the server follows the client's order unless told to prefer its own).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    Arc::new(p)
}

fn build(tls: &TlsConfig) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, format!("TLS setup failed: {e}")))?;
    let builder = if tls.insecure_skip_verify {
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            tracing::warn!("TLS certificate verification is OFF (tls_insecure_skip_verify / VALKEY_TLS_INSECURE_SKIP_VERIFY): anyone on the path can impersonate the server")
        });
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "client certificate (VALKEY_TLS_CERT / tls_cert)")?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::new(ErrorKind::Tls, format!("the client certificate '{cert}' and key '{}' do not go together: {e}", tls.key.as_deref().unwrap_or("")))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.enable_sni = true;
    Ok(config)
}

/// The CAs to trust: the PEM file given, else the system's trust store.
fn roots(tls: &TlsConfig) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_cert {
        Some(path) => {
            for cert in certs(path, "CA certificate (VALKEY_TLS_CA_CERT / tls_ca_cert)")? {
                roots.add(cert).map_err(|e| Error::new(ErrorKind::Tls, format!("the CA certificate file '{path}' holds a certificate rustls cannot use: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Tls,
                    format!("no CA certificates found in the system trust store{why} (set VALKEY_TLS_CA_CERT or the tls_ca_cert option to the CA's PEM file)"),
                ));
            }
        }
    }
    Ok(roots)
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::new(ErrorKind::Tls, format!("cannot read the TLS {what} file '{path}': {e}")))
}

fn certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::new(ErrorKind::Tls, format!("the TLS {what} file '{path}' is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::new(ErrorKind::Tls, format!("the TLS {what} file '{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    Ok(certs)
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>> {
    let what = "client key (VALKEY_TLS_KEY / tls_key)";
    let pem = read_pem(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| Error::new(ErrorKind::Tls, format!("the TLS {what} file '{path}' holds no usable PEM private key: {e}")))
}

/// A TLS failure at `server` (certificate verified against `name`) as an operator-facing error.
pub fn error(server: &str, name: &str, e: &rustls::Error) -> Error {
    use rustls::Error as E;
    let msg = match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "TLS: the certificate of {server} is not trusted: it is not signed by a trusted CA (set VALKEY_TLS_CA_CERT or the tls_ca_cert option to the CA that signed it)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "TLS: the certificate of {server} is not valid for the name '{name}' (connect by a name the certificate lists, or set VALKEY_TLS_SERVER_NAME / tls_server_name to one)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("TLS: the certificate of {server} has expired (renew the server's certificate)")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("TLS: the certificate of {server} is not valid yet (check the clocks)")
            }
            other => format!("TLS: the certificate of {server} was rejected: {other:?}"),
        },
        E::AlertReceived(AlertDescription::CertificateRequired) => format!(
            "TLS: {server} requires a client certificate and none was given (set VALKEY_TLS_CERT and VALKEY_TLS_KEY, or the tls_cert and tls_key options)"
        ),
        E::AlertReceived(a @ (AlertDescription::BadCertificate | AlertDescription::UnknownCA | AlertDescription::CertificateUnknown | AlertDescription::UnsupportedCertificate | AlertDescription::CertificateExpired | AlertDescription::AccessDenied)) => {
            format!("TLS: {server} rejected our client certificate (alert {a:?}: is it signed by a CA the server trusts, and still valid?)")
        }
        E::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "TLS: {server} refused the handshake (alert HandshakeFailure: no common cipher or protocol version, or it requires a client certificate: set VALKEY_TLS_CERT and VALKEY_TLS_KEY)"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            format!("TLS: {server} does not speak TLS (is this a plaintext port? use valkey:// or turn VALKEY_TLS off): {e}")
        }
        other => format!("TLS with {server} failed: {other}"),
    };
    Error::new(ErrorKind::Tls, msg)
}

/// Whether the first bytes a server sent look like a RESP reply (a plaintext port answering a
/// ClientHello).
pub fn looks_like_resp(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'-' | b'+' | b'$' | b'*' | b':' | b'%' | b'_'))
}

/// Whether the first bytes a server sent look like a TLS record (a TLS port answering plaintext).
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && matches!(bytes[0], 0x15 | 0x16) && bytes[1] == 0x03
}

/// A ClientHello to send to a port to see whether it speaks TLS (nothing is verified: the
/// answer's first bytes are all that is looked at).
pub fn probe_hello() -> Option<Vec<u8>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        .with_no_client_auth();
    let mut conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").ok()?).ok()?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// Accepts any server certificate (`tls_insecure_skip_verify`); signatures are still checked so
/// the handshake itself stays sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
