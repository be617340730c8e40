//! TLS for the API port: the certificate it serves, re-read when its files change, and the
//! rustls configuration around it.
//!
//! Two sources, as kube-rbac-proxy has them:
//! - **files** (`--tls-cert-file`, `--tls-key-file`, PEM, e.g. a cert-manager Secret): read at
//!   start (a broken pair stops the start), then re-read every [`TlsSettings::reload_interval`]
//!   and on [`ServerTls::reload`]; a new pair is served to new connections, a broken one
//!   (unreadable, not PEM, key not matching the certificate) is refused with a logged reason
//!   and the old pair stays;
//! - **self-signed**: an ECDSA P-256 certificate made at start for the names given, valid
//!   for [`SELF_SIGNED_VALIDITY`] and made anew when less than [`SELF_SIGNED_RENEW_BEFORE`]
//!   of it is left.
//!
//! Every certificate served is logged with its SHA-256 fingerprint (as `openssl x509
//! -fingerprint -sha256` prints it) and, when [`TlsSettings::served_cert_file`] is set,
//! written there (public PEM only) so a client on the node can trust exactly it.
//!
//! Protocols: TLS 1.2 and 1.3 (or 1.3 only), with rustls's `ring` suites: only AEAD ciphers
//! with ECDHE key exchange (AES-GCM, ChaCha20-Poly1305), nothing older to switch off.
//! ALPN offers `http/1.1` only (the server speaks HTTP/1.1).

use crate::Error;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt::Write as _;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

/// How long a self-signed certificate is valid.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A self-signed certificate with less than this left is made anew.
pub const SELF_SIGNED_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The largest certificate or key file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The oldest TLS version served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate for these DNS names and addresses.
    SelfSigned {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
}

/// How the API port serves TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub source: CertSource,
    pub min_version: TlsVersion,
    /// How often the certificate files are read again (and a self-signed certificate's
    /// expiry looked at).
    pub reload_interval: Duration,
    /// Where to write the served certificate (PEM, no key), replaced whenever it changes.
    pub served_cert_file: Option<PathBuf>,
}

/// What is served now, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    /// SHA-256 of the leaf certificate's DER, upper-case hex pairs joined by `:`.
    pub fingerprint: String,
    /// `self-signed` or the certificate file's path.
    pub origin: String,
}

/// The API port's TLS: a fixed rustls configuration whose certificate can be swapped.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<CurrentCert>,
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    /// The last refusal (the pair's bytes and the reason), so a broken pair is logged once,
    /// not at every poll.
    last_refused: Mutex<Option<(Vec<u8>, String)>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .field("served", &self.served())
            .finish()
    }
}

/// The one crypto provider: rustls's `ring` (the one kube links too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Loads or makes the first certificate and builds the configuration. Fails when the
    /// files cannot be used: an agent told to serve a certificate must not serve another.
    pub fn new(settings: TlsSettings) -> Result<ServerTls, Error> {
        let provider = provider();
        let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let first = match &settings.source {
            CertSource::Files { cert, key } => {
                let (cert_pem, key_pem) = read_pair(cert, key)?;
                Loaded::from_pem(&cert_pem, &key_pem, cert, &provider)?
            }
            CertSource::SelfSigned { dns_names, ips } => {
                Loaded::self_signed(dns_names, ips, &provider)?
            }
        };
        let resolver = Arc::new(CurrentCert(RwLock::new(first)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| Error::Tls {
                what: "the TLS versions".into(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = ServerTls {
            config: Arc::new(config),
            resolver,
            settings,
            provider,
            last_refused: Mutex::new(None),
        };
        tls.announce();
        Ok(tls)
    }

    /// The acceptor new connections go through.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// The settings this was built with.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The certificate served now.
    pub fn served(&self) -> ServedCert {
        let current = self
            .resolver
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        ServedCert {
            fingerprint: current.fingerprint.clone(),
            origin: current.origin.clone(),
        }
    }

    /// Reads the certificate files again (or renews a self-signed certificate near its
    /// expiry) and serves the new pair to new connections. `Ok(true)` when the served
    /// certificate changed, `Ok(false)` when nothing changed, `Err` (already logged) when a
    /// new pair was refused and the old one stays. Blocks on file reads: call it from a
    /// blocking thread.
    pub fn reload(&self) -> Result<bool, Error> {
        let next = match &self.settings.source {
            CertSource::Files { cert, key } => {
                let (cert_pem, key_pem) = match read_pair(cert, key) {
                    Ok(pair) => pair,
                    Err(e) => {
                        self.refused(&e, None);
                        return Err(e);
                    }
                };
                {
                    let current = self
                        .resolver
                        .0
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    if current.cert_pem == cert_pem && current.key_pem == key_pem {
                        return Ok(false);
                    }
                }
                match Loaded::from_pem(&cert_pem, &key_pem, cert, &self.provider) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        self.refused(&e, Some((cert_pem, key_pem)));
                        return Err(e);
                    }
                }
            }
            CertSource::SelfSigned { dns_names, ips } => {
                let expires = self
                    .resolver
                    .0
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .expires;
                let renew_at = expires.and_then(|e| e.checked_sub(SELF_SIGNED_RENEW_BEFORE));
                if renew_at.is_none_or(|at| SystemTime::now() < at) {
                    return Ok(false);
                }
                Loaded::self_signed(dns_names, ips, &self.provider)?
            }
        };
        *self
            .last_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .resolver
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        self.announce();
        Ok(true)
    }

    /// Re-reads on the interval until `shutdown` completes. Each read runs on a blocking
    /// thread, so a slow file system never stalls the server.
    pub async fn watch(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let period = self
            .settings
            .reload_interval
            .max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            let tls = Arc::clone(&self);
            // Errors are logged by `reload`.
            let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
        }
    }

    /// Logs (once per distinct broken pair) why a new pair was refused.
    fn refused(&self, error: &Error, pair: Option<(Vec<u8>, Vec<u8>)>) {
        let mut last = self
            .last_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (
            pair.map(|(cert, key)| [cert, key].concat())
                .unwrap_or_default(),
            error.to_string(),
        );
        if last.as_ref() == Some(&key) {
            return;
        }
        *last = Some(key);
        tracing::warn!(
            reason = %error,
            still_served = %self.served().fingerprint,
            "refused the new TLS certificate files; the certificate served so far stays"
        );
    }

    /// Logs what is served now and writes it to the served-certificate file.
    fn announce(&self) {
        let current = self
            .resolver
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        tracing::info!(
            sha256_fingerprint = %current.fingerprint,
            origin = %current.origin,
            min_version = match self.settings.min_version {
                TlsVersion::Tls12 => "TLS1.2",
                TlsVersion::Tls13 => "TLS1.3",
            },
            "serving the API over TLS with this certificate"
        );
        if let Some(path) = &self.settings.served_cert_file {
            if let Err(e) = write_atomically(path, current.served_pem.as_bytes()) {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot write the served certificate for local clients"
                );
            }
        }
    }
}

/// A certificate and key ready to serve, with what it was made from.
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
    origin: String,
    /// The PEM of the chain served (for the served-certificate file).
    served_pem: String,
    /// The file bytes it came from (empty for self-signed), to see a change.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// When a self-signed certificate expires (`None` for files: renewing them is their
    /// owner's job).
    expires: Option<SystemTime>,
}

impl Loaded {
    fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_path: &Path,
        provider: &CryptoProvider,
    ) -> Result<Loaded, Error> {
        let bad = |what: &Path, reason: String| Error::Tls {
            what: what.display().to_string(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(cert_path, format!("not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(bad(cert_path, "holds no PEM certificate".into()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Tls {
            what: "the TLS key file".into(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let key = CertifiedKey::from_der(chain.clone(), key_der, provider).map_err(|e| {
            bad(
                cert_path,
                format!("the key file does not fit this certificate: {e}"),
            )
        })?;
        // `from_der` cannot tell for every key type: ask explicitly.
        if let Err(e) = key.keys_match() {
            if !matches!(
                e,
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
            ) {
                return Err(bad(
                    cert_path,
                    format!("the key file does not fit this certificate: {e}"),
                ));
            }
        }
        Ok(Loaded {
            fingerprint: fingerprint(&chain[0]),
            origin: cert_path.display().to_string(),
            served_pem: pem_chain(&chain),
            key: Arc::new(key),
            cert_pem: cert_pem.to_vec(),
            key_pem: key_pem.to_vec(),
            expires: None,
        })
    }

    fn self_signed(
        dns_names: &[String],
        ips: &[IpAddr],
        provider: &CryptoProvider,
    ) -> Result<Loaded, Error> {
        let failed = |reason: String| Error::Tls {
            what: "the self-signed certificate".into(),
            reason,
        };
        let mut names: Vec<String> = dns_names
            .iter()
            .filter(|n| is_dns_name(n))
            .cloned()
            .collect();
        names.extend(ips.iter().map(IpAddr::to_string));
        names.sort();
        names.dedup();
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| failed(e.to_string()))?;
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(
            rcgen::DnType::CommonName,
            format!(
                "nodeguard {}",
                dns_names.first().map_or("agent", String::as_str)
            ),
        );
        params.distinguished_name = subject;
        let now = SystemTime::now();
        let expires = now + SELF_SIGNED_VALIDITY;
        // An hour back: a client whose clock is a little behind still accepts it.
        params.not_before = offset_date_time(now - Duration::from_secs(3600))?;
        params.not_after = offset_date_time(expires)?;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key_pair = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| failed(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let chain = vec![cert.der().clone()];
        let key = CertifiedKey::from_der(chain.clone(), key_der, provider)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Loaded {
            fingerprint: fingerprint(&chain[0]),
            origin: "self-signed".into(),
            served_pem: pem_chain(&chain),
            key: Arc::new(key),
            cert_pem: Vec::new(),
            key_pem: Vec::new(),
            expires: Some(expires),
        })
    }
}

/// The certificate every new handshake gets.
struct CurrentCert(RwLock<Loaded>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner).key,
        ))
    }
}

/// SHA-256 of a certificate's DER as `AB:CD:…`, the way `openssl x509 -fingerprint -sha256`
/// prints it.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// Certificates as PEM blocks.
fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
        .collect()
}

fn offset_date_time(at: SystemTime) -> Result<time::OffsetDateTime, Error> {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX)).map_err(
        |e| Error::Tls {
            what: "the self-signed certificate".into(),
            reason: format!("validity: {e}"),
        },
    )
}

/// Whether `name` can be a DNS name in a certificate (letters, digits, `-`, `.`; no IP).
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Both files of a pair, each a regular file of at most [`MAX_PEM_BYTES`].
fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Ok((read_pem_file(cert)?, read_pem_file(key)?))
}

/// Reads a small regular file without blocking on a FIFO or reading a huge one. Symlinks
/// are followed: a Secret volume's files are symlinks into its `..data` directory.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |reason: String| Error::Tls {
        what: path.display().to_string(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| failed(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| failed(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(failed("is not a regular file".into()));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(failed(format!(
            "is {} bytes, more than {MAX_PEM_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(failed(format!("grew past {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> TlsSettings {
        TlsSettings {
            source: CertSource::SelfSigned {
                dns_names: vec!["localhost".into(), "node-1".into(), "bad name!".into()],
                ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            },
            min_version: TlsVersion::Tls12,
            reload_interval: Duration::from_secs(60),
            served_cert_file: None,
        }
    }

    #[test]
    fn a_self_signed_certificate_is_made_and_kept_until_near_its_expiry() {
        let tls = ServerTls::new(self_signed()).unwrap();
        let served = tls.served();
        assert_eq!(served.origin, "self-signed");
        assert_eq!(served.fingerprint.len(), 95, "{}", served.fingerprint);
        // Far from expiry: nothing changes.
        assert!(!tls.reload().unwrap());
        assert_eq!(tls.served(), served);
    }

    #[test]
    fn dns_names_are_checked_before_they_go_into_a_certificate() {
        for good in ["localhost", "node-1", "ip-10-0-0-1.ec2.internal"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in ["", "a b", "-x", "x-", "a..b", "10.0.0.1", "::1", "ünicode"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn fifos_directories_and_huge_files_are_not_read_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_pem_file(&fifo).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let err = read_pem_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let huge = dir.path().join("huge");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(MAX_PEM_BYTES + 1).unwrap();
        let err = read_pem_file(&huge).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let err = read_pem_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
    }
}
