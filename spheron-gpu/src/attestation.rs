//! Confidential-computing attestation of NVIDIA Hopper GPUs (H100, H200): an optional second
//! proof of GPU, next to the timed compute challenge.
//!
//! A Hopper GPU in confidential-computing (CC) mode answers an SPDM 1.1 `GET_MEASUREMENTS`
//! request carrying a verifier-chosen 32-byte nonce with a `MEASUREMENTS` response: the firmware
//! measurements, opaque data (driver and VBIOS versions, the firmware id, ...) and an ECDSA
//! P-384 signature over the SHA-384 of the request followed by the response without its
//! signature. The signing key is certified by a chain from the GPU's attestation certificate
//! up to NVIDIA's device identity root CA. The driver hands out both through NVML
//! (`nvmlDeviceGetConfComputeGpuAttestationReport`, `nvmlDeviceGetConfComputeGpuCertificate`).
//!
//! This module checks such evidence offline:
//!
//! * [`AttestationReport::parse`] parses the request and the response, naming the field of
//!   every malformation ([`ReportError`]);
//! * [`verify_chain`] walks the certificate chain up to a pinned root ([`TrustAnchor`], by
//!   default [`TrustAnchor::nvidia_device_root`]): names, ECDSA P-384/SHA-384 signatures of
//!   every link, validity windows at a caller-given time, CA flags, path lengths, key usages,
//!   unknown critical extensions ([`ChainError`]);
//! * [`verify_report`] checks the request's nonce against the expected one, the report's
//!   signature with the leaf certificate's key, and the firmware id in the report against the
//!   one certified in the leaf;
//! * [`AttestationVerifier::verify_for_session`] is the same with the nonce bound to a
//!   challenge session ([`session_nonce`]), so a report recorded for another session, another
//!   provider or another seed does not verify.
//!
//! What it does not check: the measurements against NVIDIA's reference integrity manifests
//! (RIMs, "golden measurements"), and revocation (no OCSP or CRL: it runs offline). A verified
//! report proves that a genuine NVIDIA Hopper GPU signed this session's nonce, not that its
//! firmware is the expected release.
//!
//! On the prover side, an [`AttestationSource`] produces evidence for a nonce;
//! [`NoAttestation`] is the typed "unsupported" for GPUs without CC mode and for machines
//! without NVML's CC API. This crate ships no NVML-backed source (cudarc does not expose NVML).
//!
//! ```
//! use spheron_gpu::attestation::{AttestationError, AttestationSource, NoAttestation};
//! use spheron_core::GpuModel;
//!
//! let source = NoAttestation::for_model(GpuModel::A100_80G);
//! assert!(matches!(source.attest(&[0; 32]), Err(AttestationError::Unsupported { .. })));
//! ```

use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use spheron_core::proof::Challenge;
use spheron_core::{GpuModel, ProviderId};
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;
use x509_cert::der::Encode;
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectAltName};

/// NVIDIA's device identity root CA (`CN=NVIDIA Device Identity CA, O=NVIDIA`), the anchor of
/// every Hopper attestation certificate chain. Copied from NVIDIA's nvtrust repository (see
/// `spheron-gpu/fixtures/nvidia/NOTICE`).
pub const NVIDIA_DEVICE_ROOT_PEM: &str =
    include_str!("../fixtures/nvidia/verifier_device_root.pem");

/// Length of the SPDM `GET_MEASUREMENTS` request that starts a report.
pub const REQUEST_LEN: usize = 37;
/// Length of a nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an ECDSA P-384 signature (`r || s`, big-endian).
pub const SIGNATURE_LEN: usize = 96;
/// The SPDM version this module verifies (1.1: the signature covers the plain transcript).
pub const SPDM_VERSION_1_1: u8 = 0x11;
/// Longest certificate chain accepted (leaf and intermediates, with or without the root).
pub const MAX_CHAIN_LEN: usize = 8;

const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
const DMTF_MEASUREMENT_SPEC: u8 = 0x01;
/// Opaque-data type of the firmware id (NVIDIA's `OPAQUE_FIELD_ID_FWID`).
pub const OPAQUE_FWID: u16 = 20;
/// Opaque-data type of the driver version (`OPAQUE_FIELD_ID_DRIVER_VERSION`).
pub const OPAQUE_DRIVER_VERSION: u16 = 3;
/// Opaque-data type of the VBIOS version (`OPAQUE_FIELD_ID_VBIOS_VERSION`).
pub const OPAQUE_VBIOS_VERSION: u16 = 6;
const FWID_LEN: usize = 48;

const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// TCG DICE TcbInfo, where Hopper certifies its firmware id.
const TCG_DICE_TCB_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");
/// Extensions this verifier understands, so that they may be critical.
const KNOWN_EXTENSIONS: [ObjectIdentifier; 9] = [
    ObjectIdentifier::new_unwrap("2.5.29.19"), // basicConstraints
    ObjectIdentifier::new_unwrap("2.5.29.15"), // keyUsage
    ObjectIdentifier::new_unwrap("2.5.29.14"), // subjectKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.35"), // authorityKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName
    ObjectIdentifier::new_unwrap("2.5.29.31"), // cRLDistributionPoints
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extKeyUsage
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1"), // authorityInfoAccess
    TCG_DICE_TCB_INFO,
];

/// Which of the two SPDM messages a [`ReportError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// The verifier's `GET_MEASUREMENTS` request.
    Request,
    /// The GPU's `MEASUREMENTS` response.
    Response,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Request => "request",
            Message::Response => "response",
        })
    }
}

/// A malformed attestation report, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The text form was not hexadecimal.
    #[error("report is not hex: {0}")]
    NotHex(String),
    /// The buffer ended inside a field.
    #[error(
        "{message} truncated in `{field}`: needs {needed} bytes at offset {offset}, {available} left"
    )]
    Truncated {
        /// The message.
        message: Message,
        /// The field being read.
        field: &'static str,
        /// Offset of the field within the message.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// An SPDM version other than 1.1.
    #[error("{message} has SPDM version {found:#04x}, only 1.1 (0x11) is verified")]
    UnsupportedVersion {
        /// The message.
        message: Message,
        /// The version byte found.
        found: u8,
    },
    /// Request and response disagree on the SPDM version.
    #[error("request is SPDM {request:#04x} but response is {response:#04x}")]
    VersionMismatch {
        /// The request's version.
        request: u8,
        /// The response's version.
        response: u8,
    },
    /// Not a `GET_MEASUREMENTS` request or `MEASUREMENTS` response.
    #[error("{message} has code {found:#04x}, expected {expected:#04x}")]
    WrongCode {
        /// The message.
        message: Message,
        /// The code expected.
        expected: u8,
        /// The code found.
        found: u8,
    },
    /// The request did not ask for a signature (bit 0 of `Param1`), so the response is unsigned.
    #[error("request did not ask for a signed response (Param1 = {param1:#04x})")]
    SignatureNotRequested {
        /// The request's `Param1`.
        param1: u8,
    },
    /// The response carries no measurement block.
    #[error("response has no measurement blocks")]
    NoMeasurementBlocks,
    /// A length field disagrees with the data it describes.
    #[error("bad length in `{field}`: {reason}")]
    BadLength {
        /// The length field.
        field: &'static str,
        /// What disagreed.
        reason: String,
    },
    /// A measurement block that does not follow the DMTF measurement specification.
    #[error("measurement block {index} has specification {found:#04x}, expected DMTF (0x01)")]
    NotDmtf {
        /// The block's index.
        index: u8,
        /// The specification byte found.
        found: u8,
    },
    /// Two measurement blocks with one index.
    #[error("measurement index {0} appears twice")]
    DuplicateIndex(u8),
    /// Bytes left after a field that should end its container.
    #[error("{count} trailing bytes after `{after}` in the {message}")]
    TrailingBytes {
        /// The message.
        message: Message,
        /// The last field read.
        after: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
}

/// A certificate chain that does not lead to the pinned root. `index` counts from the leaf
/// (0) in the chain as given; the pinned root itself is `index == chain length`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain had no certificate.
    #[error("certificate chain is empty")]
    Empty,
    /// The chain is longer than [`MAX_CHAIN_LEN`].
    #[error("certificate chain has more than {max} certificates")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// PEM or DER that does not parse as certificates.
    #[error("certificate chain does not parse: {0}")]
    Parse(String),
    /// The pinned root does not parse.
    #[error("trust anchor does not parse: {0}")]
    BadAnchor(String),
    /// The chain ends at a self-issued certificate that is not the pinned root, or its top
    /// certificate's issuer is not the pinned root.
    #[error("chain does not end at the pinned root `{root}`: its top is issued by `{issuer}`")]
    UntrustedRoot {
        /// The pinned root's subject.
        root: String,
        /// The issuer named by the chain's top certificate.
        issuer: String,
    },
    /// A certificate's issuer is not the next certificate's subject (a link is missing).
    #[error(
        "certificate {index} (`{subject}`) is issued by `{issuer}`, but the next certificate is `{next}`"
    )]
    IssuerMismatch {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// The issuer it names.
        issuer: String,
        /// The subject of the certificate that follows it.
        next: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("signature of certificate {index} (`{subject}`) does not verify with its issuer's key")]
    BadSignature {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// A signature or key algorithm other than ECDSA P-384 with SHA-384.
    #[error("certificate {index} (`{subject}`): unsupported algorithm: {reason}")]
    UnsupportedAlgorithm {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// Which algorithm.
        reason: String,
    },
    /// A certificate that signs another but is not a CA (basic constraints), may not sign
    /// certificates (key usage), or has a path-length constraint exceeded.
    #[error("certificate {index} (`{subject}`) may not issue certificates here: {reason}")]
    NotACa {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// Which constraint.
        reason: String,
    },
    /// The leaf's key usage forbids signatures.
    #[error("leaf certificate `{subject}` may not sign: {reason}")]
    LeafKeyUsage {
        /// The leaf's subject.
        subject: String,
        /// Which constraint.
        reason: String,
    },
    /// A certificate not yet valid at the verification time.
    #[error(
        "certificate {index} (`{subject}`) not valid before unix time {not_before}, checked at {at}"
    )]
    NotYetValid {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// Start of validity, seconds since the Unix epoch.
        not_before: u64,
        /// The verification time, seconds since the Unix epoch.
        at: u64,
    },
    /// A certificate expired at the verification time.
    #[error("certificate {index} (`{subject}`) expired at unix time {not_after}, checked at {at}")]
    Expired {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// End of validity, seconds since the Unix epoch.
        not_after: u64,
        /// The verification time, seconds since the Unix epoch.
        at: u64,
    },
    /// A critical extension this verifier does not understand (RFC 5280 requires rejecting it).
    #[error("certificate {index} (`{subject}`) has unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// The extension's OID.
        oid: String,
    },
    /// An extension that is present but does not decode.
    #[error("certificate {index} (`{subject}`) has a malformed extension: {reason}")]
    BadExtension {
        /// The certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// What failed.
        reason: String,
    },
}

/// Why attestation evidence was not produced or not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// This GPU or machine cannot attest (no confidential-computing mode, or no NVML CC API).
    #[error("attestation unsupported for {model}: {reason}")]
    Unsupported {
        /// The GPU model (or a description of the device).
        model: String,
        /// Why.
        reason: String,
    },
    /// The report is malformed.
    #[error("malformed attestation report: {0}")]
    Report(#[from] ReportError),
    /// The certificate chain is not acceptable.
    #[error("attestation certificate chain rejected: {0}")]
    Chain(#[from] ChainError),
    /// The report answers another nonce than the one this session expects (a replay, or a
    /// report for another session or provider).
    #[error("report nonce {} is not the expected {}", hex(found), hex(expected))]
    NonceMismatch {
        /// The nonce the verifier expected.
        expected: [u8; NONCE_LEN],
        /// The nonce in the report's request.
        found: [u8; NONCE_LEN],
    },
    /// The signature bytes are not a valid P-384 signature (a scalar zero or out of range).
    #[error("report signature is not a valid ECDSA P-384 signature")]
    MalformedSignature,
    /// The report's signature does not verify with the leaf certificate's key.
    #[error("report signature does not verify with the attestation certificate `{subject}`")]
    BadSignature {
        /// The leaf certificate's subject.
        subject: String,
    },
    /// The firmware id in the report differs from the one certified in the leaf certificate.
    #[error("report firmware id {} differs from the certificate's {}", hex(report), certificate.as_deref().map(hex).unwrap_or_else(|| "(none)".into()))]
    FwidMismatch {
        /// The report's firmware id.
        report: Vec<u8>,
        /// The leaf certificate's, if it has one.
        certificate: Option<Vec<u8>>,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The verifier's SPDM `GET_MEASUREMENTS` request, as echoed in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementRequest {
    /// SPDM version byte (0x11).
    pub version: u8,
    /// `Param1` (bit 0: signature requested).
    pub param1: u8,
    /// `Param2` (0xFF: all measurements).
    pub param2: u8,
    /// The verifier's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// `SlotIDParam`: the certificate slot whose key signs.
    pub slot_id: u8,
}

/// One DMTF measurement block of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// The block's index (1-based on Hopper).
    pub index: u8,
    /// `DMTFSpecMeasurementValueType`.
    pub value_type: u8,
    /// The measurement (a SHA-384 digest on Hopper).
    pub value: Vec<u8>,
}

/// One type-length-value entry of the response's opaque data (NVIDIA's layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpaqueField {
    /// The entry's type (for example [`OPAQUE_FWID`]).
    pub kind: u16,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// The GPU's SPDM `MEASUREMENTS` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementResponse {
    /// SPDM version byte.
    pub version: u8,
    /// `Param1`.
    pub param1: u8,
    /// `Param2`.
    pub param2: u8,
    /// The measurement blocks, in the order given.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's own nonce.
    pub responder_nonce: [u8; NONCE_LEN],
    /// The opaque data entries.
    pub opaque: Vec<OpaqueField>,
    /// The signature, `r || s`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A parsed attestation report: the request followed by the signed response, as NVML returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationReport {
    /// The request.
    pub request: MeasurementRequest,
    /// The response.
    pub response: MeasurementResponse,
    signed: Vec<u8>,
}

/// Reads fields off a message, naming each on failure.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    message: Message,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], message: Message) -> Self {
        Cursor {
            bytes,
            pos: 0,
            message,
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], ReportError> {
        let available = self.bytes.len() - self.pos;
        if available < n {
            return Err(ReportError::Truncated {
                message: self.message,
                field,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ReportError> {
        Ok(self.take(field, 1)?[0])
    }

    /// A little-endian unsigned integer of `n` bytes (`n <= 8`).
    fn le(&mut self, field: &'static str, n: usize) -> Result<usize, ReportError> {
        let b = self.take(field, n)?;
        Ok(b.iter()
            .rev()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ReportError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn finish(&self, after: &'static str) -> Result<(), ReportError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ReportError::TrailingBytes {
                message: self.message,
                after,
                count,
            }),
        }
    }
}

impl AttestationReport {
    /// Parses the binary report: a 37-byte `GET_MEASUREMENTS` request, then the `MEASUREMENTS`
    /// response ending with a 96-byte signature, with nothing after it.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let mut req = Cursor::new(
            bytes.get(..REQUEST_LEN.min(bytes.len())).unwrap_or(&[]),
            Message::Request,
        );
        let version = req.u8("SPDMVersion")?;
        let code = req.u8("RequestResponseCode")?;
        let param1 = req.u8("Param1")?;
        let param2 = req.u8("Param2")?;
        let nonce = req.array::<NONCE_LEN>("Nonce")?;
        let slot_id = req.u8("SlotIDParam")?;
        if version != SPDM_VERSION_1_1 {
            return Err(ReportError::UnsupportedVersion {
                message: Message::Request,
                found: version,
            });
        }
        if code != GET_MEASUREMENTS {
            return Err(ReportError::WrongCode {
                message: Message::Request,
                expected: GET_MEASUREMENTS,
                found: code,
            });
        }
        if param1 & 1 == 0 {
            return Err(ReportError::SignatureNotRequested { param1 });
        }
        let request = MeasurementRequest {
            version,
            param1,
            param2,
            nonce,
            slot_id,
        };

        let mut r = Cursor::new(&bytes[REQUEST_LEN..], Message::Response);
        let rversion = r.u8("SPDMVersion")?;
        let rcode = r.u8("RequestResponseCode")?;
        if rversion != version {
            return Err(ReportError::VersionMismatch {
                request: version,
                response: rversion,
            });
        }
        if rcode != MEASUREMENTS {
            return Err(ReportError::WrongCode {
                message: Message::Response,
                expected: MEASUREMENTS,
                found: rcode,
            });
        }
        let rparam1 = r.u8("Param1")?;
        let rparam2 = r.u8("Param2")?;
        let count = usize::from(r.u8("NumberOfBlocks")?);
        let record_len = r.le("MeasurementRecordLength", 3)?;
        let record = r.take("MeasurementRecord", record_len)?;
        if count == 0 {
            return Err(ReportError::NoMeasurementBlocks);
        }
        let blocks = parse_record(record, count)?;
        let responder_nonce = r.array::<NONCE_LEN>("Nonce")?;
        let opaque_len = r.le("OpaqueLength", 2)?;
        let opaque = parse_opaque(r.take("OpaqueData", opaque_len)?)?;
        let signed_end = REQUEST_LEN + r.pos;
        let signature = r.array::<SIGNATURE_LEN>("Signature")?;
        r.finish("Signature")?;
        Ok(AttestationReport {
            request,
            response: MeasurementResponse {
                version: rversion,
                param1: rparam1,
                param2: rparam2,
                blocks,
                responder_nonce,
                opaque,
                signature,
            },
            signed: bytes[..signed_end].to_vec(),
        })
    }

    /// Parses the hexadecimal text form (whitespace ignored), as NVIDIA's samples store it.
    pub fn parse_hex(text: &str) -> Result<Self, ReportError> {
        Self::parse(&decode_hex(text)?)
    }

    /// The bytes the signature covers: the request and the response up to its signature.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The first opaque entry of type `kind`.
    pub fn opaque(&self, kind: u16) -> Option<&[u8]> {
        self.response
            .opaque
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.data.as_slice())
    }

    /// The firmware id in the opaque data, if any.
    pub fn fwid(&self) -> Option<&[u8]> {
        self.opaque(OPAQUE_FWID)
    }

    /// The driver version in the opaque data (NUL-terminated text), if any.
    pub fn driver_version(&self) -> Option<String> {
        self.opaque(OPAQUE_DRIVER_VERSION).map(|d| {
            let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            String::from_utf8_lossy(&d[..end]).into_owned()
        })
    }
}

/// Decodes hex text, ignoring whitespace.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, ReportError> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(ReportError::NotHex(format!(
            "odd number of digits ({})",
            digits.len()
        )));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, p)| match (nibble(p[0]), nibble(p[1])) {
            (Some(h), Some(l)) => Ok((h << 4) | l),
            _ => Err(ReportError::NotHex(format!("non-hex digit in pair {i}"))),
        })
        .collect()
}

fn parse_record(record: &[u8], count: usize) -> Result<Vec<MeasurementBlock>, ReportError> {
    let mut c = Cursor::new(record, Message::Response);
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(count);
    for _ in 0..count {
        let index = c.u8("MeasurementBlock.Index")?;
        let spec = c.u8("MeasurementBlock.MeasurementSpecification")?;
        let size = c.le("MeasurementBlock.MeasurementSize", 2)?;
        let body = c.take("MeasurementBlock.Measurement", size)?;
        if spec != DMTF_MEASUREMENT_SPEC {
            return Err(ReportError::NotDmtf { index, found: spec });
        }
        let mut m = Cursor::new(body, Message::Response);
        let value_type = m.u8("DMTFSpecMeasurementValueType")?;
        let value_size = m.le("DMTFSpecMeasurementValueSize", 2)?;
        if value_size != m.remaining() {
            return Err(ReportError::BadLength {
                field: "DMTFSpecMeasurementValueSize",
                reason: format!(
                    "block {index} declares a {value_size}-byte value in a {}-byte measurement",
                    body.len()
                ),
            });
        }
        let value = m.take("DMTFSpecMeasurementValue", value_size)?.to_vec();
        if blocks.iter().any(|b| b.index == index) {
            return Err(ReportError::DuplicateIndex(index));
        }
        blocks.push(MeasurementBlock {
            index,
            value_type,
            value,
        });
    }
    if c.remaining() != 0 {
        return Err(ReportError::BadLength {
            field: "MeasurementRecordLength",
            reason: format!(
                "{count} blocks leave {} of {} bytes unread",
                c.remaining(),
                record.len()
            ),
        });
    }
    Ok(blocks)
}

fn parse_opaque(data: &[u8]) -> Result<Vec<OpaqueField>, ReportError> {
    let mut c = Cursor::new(data, Message::Response);
    let mut out = Vec::new();
    while c.remaining() > 0 {
        let kind = c.le("OpaqueData.DataType", 2)? as u16;
        let size = c.le("OpaqueData.DataSize", 2)?;
        let data = c.take("OpaqueData.Data", size)?.to_vec();
        out.push(OpaqueField { kind, data });
    }
    Ok(out)
}

/// A pinned root certificate that attestation chains must end at.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    cert: Certificate,
    der: Vec<u8>,
}

impl TrustAnchor {
    /// NVIDIA's device identity root CA ([`NVIDIA_DEVICE_ROOT_PEM`]).
    pub fn nvidia_device_root() -> Self {
        // The embedded PEM is a fixed, tested constant.
        #[allow(clippy::expect_used)]
        Self::from_pem(NVIDIA_DEVICE_ROOT_PEM).expect("embedded NVIDIA root parses")
    }

    /// A root from one PEM certificate (for another vendor root, or a test CA).
    pub fn from_pem(pem: &str) -> Result<Self, ChainError> {
        use x509_cert::der::DecodePem;
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| ChainError::BadAnchor(e.to_string()))?;
        let der = cert
            .to_der()
            .map_err(|e| ChainError::BadAnchor(e.to_string()))?;
        Ok(TrustAnchor { cert, der })
    }

    /// The root's subject (RFC 4514).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }
}

/// What a verified attestation says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedAttestation {
    /// The nonce the report answers (the one expected).
    pub nonce: [u8; NONCE_LEN],
    /// The GPU's own nonce.
    pub responder_nonce: [u8; NONCE_LEN],
    /// How many measurement blocks were signed.
    pub measurement_count: usize,
    /// The measurement values, by block index.
    pub measurements: Vec<(u8, Vec<u8>)>,
    /// The attestation (leaf) certificate's subject, RFC 4514.
    pub leaf_subject: String,
    /// The device identity in the leaf's subject alternative name (for example
    /// `NVIDIA:GH100:48B02D92494BADF4`), if present.
    pub device_id: Option<String>,
    /// The firmware id, if the report carries one (checked against the leaf certificate).
    pub fwid: Option<Vec<u8>>,
    /// The driver version from the report's opaque data, if present.
    pub driver_version: Option<String>,
}

/// Seconds since the Unix epoch (0 for times before it).
fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

/// The P-384 key of a certificate, refusing any other algorithm.
fn p384_key(cert: &Certificate, index: usize) -> Result<VerifyingKey, ChainError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let unsupported = |reason: String| ChainError::UnsupportedAlgorithm {
        index,
        subject: subject(cert),
        reason,
    };
    if spki.algorithm.oid != EC_PUBLIC_KEY {
        return Err(unsupported(format!(
            "public key algorithm {}",
            spki.algorithm.oid
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if curve != Some(SECP384R1) {
        return Err(unsupported(format!("curve {curve:?}, expected secp384r1")));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| unsupported("public key bit string has unused bits".into()))?;
    VerifyingKey::from_sec1_bytes(bits)
        .map_err(|_| unsupported("public key is not a P-384 point".into()))
}

/// Checks `cert`'s signature with `issuer_key`: ECDSA P-384 over SHA-384 of the TBS part.
fn check_cert_signature(
    cert: &Certificate,
    index: usize,
    issuer_key: &VerifyingKey,
) -> Result<(), ChainError> {
    let unsupported = |reason: String| ChainError::UnsupportedAlgorithm {
        index,
        subject: subject(cert),
        reason,
    };
    if cert.signature_algorithm.oid != ECDSA_WITH_SHA384
        || cert.tbs_certificate.signature.oid != ECDSA_WITH_SHA384
    {
        return Err(unsupported(format!(
            "signature algorithm {}, expected ecdsa-with-SHA384",
            cert.signature_algorithm.oid
        )));
    }
    let bad = || ChainError::BadSignature {
        index,
        subject: subject(cert),
    };
    let sig_der = cert.signature.as_bytes().ok_or_else(bad)?;
    let sig = Signature::from_der(sig_der).map_err(|_| bad())?;
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| ChainError::Parse(e.to_string()))?;
    issuer_key.verify(&tbs, &sig).map_err(|_| bad())
}

fn check_validity(cert: &Certificate, index: usize, at: SystemTime) -> Result<(), ChainError> {
    let v = &cert.tbs_certificate.validity;
    let (nb, na, now) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
        unix(at),
    );
    if now < nb {
        return Err(ChainError::NotYetValid {
            index,
            subject: subject(cert),
            not_before: nb,
            at: now,
        });
    }
    if now > na {
        return Err(ChainError::Expired {
            index,
            subject: subject(cert),
            not_after: na,
            at: now,
        });
    }
    Ok(())
}

fn check_extensions(cert: &Certificate, index: usize) -> Result<(), ChainError> {
    for ext in cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]) {
        if ext.critical && !KNOWN_EXTENSIONS.contains(&ext.extn_id) {
            return Err(ChainError::UnknownCriticalExtension {
                index,
                subject: subject(cert),
                oid: ext.extn_id.to_string(),
            });
        }
    }
    Ok(())
}

fn bad_ext(cert: &Certificate, index: usize, e: impl std::fmt::Display) -> ChainError {
    ChainError::BadExtension {
        index,
        subject: subject(cert),
        reason: e.to_string(),
    }
}

/// Checks that `cert` may issue certificates with `below` intermediate CAs under it.
fn check_ca(cert: &Certificate, index: usize, below: usize) -> Result<(), ChainError> {
    let not_ca = |reason: String| ChainError::NotACa {
        index,
        subject: subject(cert),
        reason,
    };
    let bc = cert
        .tbs_certificate
        .get::<BasicConstraints>()
        .map_err(|e| bad_ext(cert, index, e))?;
    match bc {
        Some((_, bc)) if bc.ca => {
            if let Some(max) = bc.path_len_constraint
                && below > usize::from(max)
            {
                return Err(not_ca(format!(
                    "path length {below} exceeds its constraint {max}"
                )));
            }
        }
        Some(_) => return Err(not_ca("basic constraints say it is not a CA".into())),
        None => return Err(not_ca("no basic constraints extension".into())),
    }
    if let Some((_, ku)) = cert
        .tbs_certificate
        .get::<KeyUsage>()
        .map_err(|e| bad_ext(cert, index, e))?
        && !ku.key_cert_sign()
    {
        return Err(not_ca("key usage lacks keyCertSign".into()));
    }
    Ok(())
}

/// The leaf certificate of a verified chain.
#[derive(Clone, Debug)]
pub struct VerifiedChain {
    leaf: Certificate,
    key: VerifyingKey,
}

impl VerifiedChain {
    /// The leaf's subject.
    pub fn leaf_subject(&self) -> String {
        subject(&self.leaf)
    }

    /// The leaf's public key, which signs attestation reports.
    pub fn leaf_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The device identity in the leaf's subject alternative name (the first UTF-8 other name).
    pub fn device_id(&self) -> Option<String> {
        let (_, san) = self.leaf.tbs_certificate.get::<SubjectAltName>().ok()??;
        san.0.iter().find_map(|n| match n {
            GeneralName::OtherName(o) => Utf8StringRef::try_from(&o.value)
                .ok()
                .map(|s| s.to_string()),
            _ => None,
        })
    }

    /// The firmware id certified in the leaf's TCG DICE TcbInfo extension: on Hopper its last
    /// 48 bytes, which are an OCTET STRING of that length.
    pub fn fwid(&self) -> Option<Vec<u8>> {
        let ext = self
            .leaf
            .tbs_certificate
            .extensions
            .as_deref()?
            .iter()
            .find(|e| e.extn_id == TCG_DICE_TCB_INFO)?;
        let v = ext.extn_value.as_bytes();
        let tail = v.len().checked_sub(FWID_LEN + 2)?;
        (v[tail] == 0x04 && usize::from(v[tail + 1]) == FWID_LEN).then(|| v[tail + 2..].to_vec())
    }
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Splits a PEM chain into certificates; only whitespace may stand between them.
fn parse_pem_chain(pem: &str) -> Result<Vec<Certificate>, ChainError> {
    use x509_cert::der::DecodePem;
    let mut certs = Vec::new();
    let mut rest = pem;
    loop {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            return Ok(certs);
        }
        let parse =
            |reason: String| ChainError::Parse(format!("certificate {}: {reason}", certs.len()));
        if !trimmed.starts_with(PEM_BEGIN) {
            return Err(parse(format!("expected `{PEM_BEGIN}`")));
        }
        let end = trimmed
            .find(PEM_END)
            .ok_or_else(|| parse(format!("no `{PEM_END}`")))?
            + PEM_END.len();
        if certs.len() == MAX_CHAIN_LEN {
            return Err(ChainError::TooLong { max: MAX_CHAIN_LEN });
        }
        let cert =
            Certificate::from_pem(&trimmed.as_bytes()[..end]).map_err(|e| parse(e.to_string()))?;
        certs.push(cert);
        rest = &trimmed[end..];
    }
}

/// Verifies a PEM certificate chain (leaf first, as NVML returns it; the root may be included
/// at the end or left out) against the pinned `root`, at time `at`.
pub fn verify_chain(
    chain_pem: &str,
    root: &TrustAnchor,
    at: SystemTime,
) -> Result<VerifiedChain, ChainError> {
    let mut certs = parse_pem_chain(chain_pem)?;
    if certs.is_empty() {
        return Err(ChainError::Empty);
    }
    // A copy of the pinned root at the end is dropped: the pinned one stands in for it.
    if let Some(last) = certs.last()
        && certs.len() > 1
        && last.to_der().ok().as_deref() == Some(root.der.as_slice())
    {
        certs.pop();
    }
    let top = certs.last().ok_or(ChainError::Empty)?;
    if top.tbs_certificate.issuer != root.cert.tbs_certificate.subject
        || (top.tbs_certificate.issuer == top.tbs_certificate.subject
            && top.to_der().ok().as_deref() != Some(root.der.as_slice()))
    {
        return Err(ChainError::UntrustedRoot {
            root: root.subject(),
            issuer: top.tbs_certificate.issuer.to_string(),
        });
    }
    let n = certs.len();
    // The root itself: its own signature, window, CA flags.
    check_validity(&root.cert, n, at)?;
    check_extensions(&root.cert, n)?;
    let root_key = p384_key(&root.cert, n)?;
    check_cert_signature(&root.cert, n, &root_key)?;
    check_ca(&root.cert, n, n - 1)?;
    for (i, cert) in certs.iter().enumerate() {
        check_validity(cert, i, at)?;
        check_extensions(cert, i)?;
        let (issuer, issuer_index) = match certs.get(i + 1) {
            Some(next) => (next, i + 1),
            None => (&root.cert, n),
        };
        if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(ChainError::IssuerMismatch {
                index: i,
                subject: subject(cert),
                issuer: cert.tbs_certificate.issuer.to_string(),
                next: subject(issuer),
            });
        }
        if issuer_index < n {
            // Intermediate CAs below `issuer`: certificates 1..issuer_index.
            check_ca(issuer, issuer_index, issuer_index - 1)?;
        }
        check_cert_signature(cert, i, &p384_key(issuer, issuer_index)?)?;
    }
    let leaf = certs.swap_remove(0);
    if let Some((_, ku)) = leaf
        .tbs_certificate
        .get::<KeyUsage>()
        .map_err(|e| bad_ext(&leaf, 0, e))?
        && !ku.digital_signature()
    {
        return Err(ChainError::LeafKeyUsage {
            subject: subject(&leaf),
            reason: "key usage lacks digitalSignature".into(),
        });
    }
    let key = p384_key(&leaf, 0)?;
    Ok(VerifiedChain { leaf, key })
}

/// Verifies an attestation report (binary) and its certificate chain (PEM, leaf first) against
/// the pinned `root`, requiring the report to answer `expected_nonce`, with certificate windows
/// checked at `at`. The lower-level entry point; sessions use
/// [`AttestationVerifier::verify_for_session`].
pub fn verify_report(
    report: &[u8],
    chain_pem: &str,
    root: &TrustAnchor,
    expected_nonce: &[u8; NONCE_LEN],
    at: SystemTime,
) -> Result<VerifiedAttestation, AttestationError> {
    let report = AttestationReport::parse(report)?;
    if report.request.nonce != *expected_nonce {
        return Err(AttestationError::NonceMismatch {
            expected: *expected_nonce,
            found: report.request.nonce,
        });
    }
    let chain = verify_chain(chain_pem, root, at)?;
    let sig = Signature::from_slice(&report.response.signature)
        .map_err(|_| AttestationError::MalformedSignature)?;
    chain
        .key
        .verify(report.signed_bytes(), &sig)
        .map_err(|_| AttestationError::BadSignature {
            subject: chain.leaf_subject(),
        })?;
    let fwid = report.fwid().map(<[u8]>::to_vec);
    if let Some(fwid) = &fwid {
        let certified = chain.fwid();
        if certified.as_ref() != Some(fwid) {
            return Err(AttestationError::FwidMismatch {
                report: fwid.clone(),
                certificate: certified,
            });
        }
    }
    Ok(VerifiedAttestation {
        nonce: report.request.nonce,
        responder_nonce: report.response.responder_nonce,
        measurement_count: report.response.blocks.len(),
        measurements: report
            .response
            .blocks
            .iter()
            .map(|b| (b.index, b.value.clone()))
            .collect(),
        leaf_subject: chain.leaf_subject(),
        device_id: chain.device_id(),
        fwid,
        driver_version: report.driver_version(),
    })
}

/// Domain separation of [`session_nonce`].
pub const NONCE_DOMAIN: &str = "spheron proof-of-gpu attestation nonce v1";

/// The nonce a provider's GPU must sign for a challenge session: BLAKE3 in key-derivation mode
/// under [`NONCE_DOMAIN`] over the session id, the challenge's fresh seed and the challenged
/// provider's account. It is unpredictable before the challenge (the seed is fresh verifier
/// entropy) and differs per session and per provider, so a recorded report cannot be replayed.
pub fn session_nonce(challenge: &Challenge, provider: &ProviderId) -> [u8; NONCE_LEN] {
    let mut h = blake3::Hasher::new_derive_key(NONCE_DOMAIN);
    h.update(&challenge.session);
    h.update(&challenge.seed);
    h.update(&provider.0);
    *h.finalize().as_bytes()
}

/// Attestation evidence as a provider sends it: the binary report and the PEM chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationEvidence {
    /// The report: SPDM request followed by the signed response.
    pub report: Vec<u8>,
    /// The certificate chain, PEM, leaf first.
    pub cert_chain_pem: String,
}

/// The verifier side: a pinned root and the checks of [`verify_report`].
#[derive(Clone, Debug)]
pub struct AttestationVerifier {
    root: TrustAnchor,
}

impl Default for AttestationVerifier {
    fn default() -> Self {
        Self::new(TrustAnchor::nvidia_device_root())
    }
}

impl AttestationVerifier {
    /// A verifier pinned to `root`.
    pub fn new(root: TrustAnchor) -> Self {
        AttestationVerifier { root }
    }

    /// Verifies `evidence` against an explicit nonce.
    pub fn verify(
        &self,
        evidence: &AttestationEvidence,
        expected_nonce: &[u8; NONCE_LEN],
        at: SystemTime,
    ) -> Result<VerifiedAttestation, AttestationError> {
        verify_report(
            &evidence.report,
            &evidence.cert_chain_pem,
            &self.root,
            expected_nonce,
            at,
        )
    }

    /// Verifies `evidence` for a challenge session: the report must answer
    /// [`session_nonce`]`(challenge, provider)`.
    pub fn verify_for_session(
        &self,
        evidence: &AttestationEvidence,
        challenge: &Challenge,
        provider: &ProviderId,
        at: SystemTime,
    ) -> Result<VerifiedAttestation, AttestationError> {
        self.verify(evidence, &session_nonce(challenge, provider), at)
    }
}

/// Whether a model has a confidential-computing mode that can attest (Hopper: H100, H200).
pub fn supports_cc(model: GpuModel) -> bool {
    matches!(
        model,
        GpuModel::H100Sxm | GpuModel::H100Pcie | GpuModel::H200
    )
}

/// The prover side: produces attestation evidence answering a nonce.
pub trait AttestationSource: Send + Sync {
    /// Evidence whose report's request carries `nonce`.
    fn attest(&self, nonce: &[u8; NONCE_LEN]) -> Result<AttestationEvidence, AttestationError>;
}

/// A source that cannot attest: [`AttestationError::Unsupported`] with the model and the reason.
#[derive(Clone, Debug)]
pub struct NoAttestation {
    model: String,
    reason: String,
}

impl NoAttestation {
    /// The source for a GPU of `model` on a machine with no NVML-backed source: models without
    /// CC mode say so; Hopper models say that no NVML confidential-computing API is available.
    pub fn for_model(model: GpuModel) -> Self {
        let reason = if supports_cc(model) {
            "no NVML confidential-computing attestation API on this machine (this build ships no NVML source)"
        } else {
            "this GPU model has no confidential-computing mode"
        };
        NoAttestation {
            model: format!("{model:?}"),
            reason: reason.into(),
        }
    }

    /// A source for a device described by `model`, unsupported for `reason`.
    pub fn new(model: impl Into<String>, reason: impl Into<String>) -> Self {
        NoAttestation {
            model: model.into(),
            reason: reason.into(),
        }
    }
}

impl AttestationSource for NoAttestation {
    fn attest(&self, _nonce: &[u8; NONCE_LEN]) -> Result<AttestationEvidence, AttestationError> {
        Err(AttestationError::Unsupported {
            model: self.model.clone(),
            reason: self.reason.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(session: u8, seed: u8) -> Challenge {
        Challenge {
            version: 3,
            session: [session; 16],
            seed: [seed; 32],
            claimed: GpuModel::H100Sxm,
            n: 64,
            batch: 1,
            dtype: spheron_core::proof::Dtype::Int8,
            deadline_us: 1,
            provider: None,
        }
    }

    #[test]
    fn session_nonce_separates_sessions_seeds_and_providers() {
        let p = ProviderId::from_label("p");
        let q = ProviderId::from_label("q");
        let base = session_nonce(&challenge(1, 1), &p);
        assert_eq!(base, session_nonce(&challenge(1, 1), &p));
        assert_ne!(base, session_nonce(&challenge(2, 1), &p));
        assert_ne!(base, session_nonce(&challenge(1, 2), &p));
        assert_ne!(base, session_nonce(&challenge(1, 1), &q));
    }

    #[test]
    fn only_hopper_models_support_cc() {
        for m in GpuModel::ALL {
            let expected = matches!(m, GpuModel::H100Sxm | GpuModel::H100Pcie | GpuModel::H200);
            assert_eq!(supports_cc(m), expected, "{m:?}");
            match NoAttestation::for_model(m).attest(&[0; 32]) {
                Err(AttestationError::Unsupported { model, reason }) => {
                    assert_eq!(model, format!("{m:?}"));
                    assert_eq!(reason.contains("NVML"), expected, "{reason}");
                }
                other => panic!("{m:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn hex_decoding_names_bad_input() {
        assert_eq!(decode_hex("0a 0B\n"), Ok(vec![0x0a, 0x0b]));
        assert!(matches!(decode_hex("abc"), Err(ReportError::NotHex(_))));
        assert!(matches!(decode_hex("zz"), Err(ReportError::NotHex(_))));
    }
}
