//! Confidential-computing attestation on a recorded H100 report (NVIDIA's nvtrust sample,
//! `fixtures/nvidia/NOTICE`) and on chains from a throwaway CA made here.

#![allow(clippy::unwrap_used)] // helpers building fixtures; a failure there is a test failure

use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::DecodePrivateKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use spheron_core::proof::{Challenge, Dtype};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::attestation::{
    AttestationError, AttestationEvidence, AttestationReport, AttestationVerifier, ChainError,
    Message, NVIDIA_DEVICE_ROOT_PEM, ReportError, TrustAnchor, session_nonce, verify_chain,
    verify_report,
};
use std::time::{Duration, SystemTime};

const REPORT_HEX: &str = include_str!("../fixtures/nvidia/hopperAttestationReport.txt");
const CHAIN_PEM: &str = include_str!("../fixtures/nvidia/hopperCertChain.txt");
const RIM_ROOT_PEM: &str = include_str!("../fixtures/nvidia/verifier_RIM_root.pem");

/// The nonce of the recorded request (bytes 4..36 of the report), which the GPU signed. (The
/// fixed `NONCE` in the NVIDIA verifier's config, `4cff7f53…`, is not the one this sample carries.)
const FIXTURE_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
/// The firmware id the recorded report and its leaf certificate carry.
const FIXTURE_FWID: &str = "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d";

/// Offset of the response within a report.
const RESP: usize = 37;

fn unhex(s: &str) -> Vec<u8> {
    spheron_gpu::attestation::decode_hex(s).unwrap()
}

fn report() -> Vec<u8> {
    unhex(REPORT_HEX)
}

fn nonce() -> [u8; 32] {
    unhex(FIXTURE_NONCE).try_into().unwrap()
}

/// 2026-01-01T00:00:00Z: inside every fixture certificate's window (the latest `notBefore` is
/// 2022-03-01, every `notAfter` is 9999-12-31).
fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn root() -> TrustAnchor {
    TrustAnchor::nvidia_device_root()
}

fn pem_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|b| b.starts_with("-----BEGIN"))
        .map(|b| format!("{b}\n"))
        .collect()
}

fn verify(
    report: &[u8],
    chain: &str,
) -> Result<spheron_gpu::attestation::VerifiedAttestation, AttestationError> {
    verify_report(report, chain, &root(), &nonce(), at())
}

#[test]
fn recorded_report_verifies_with_its_nonce_at_a_time_inside_the_windows() {
    let v = verify(&report(), CHAIN_PEM).unwrap();
    assert_eq!(v.nonce, nonce());
    assert_eq!(v.measurement_count, 64);
    assert_eq!(v.measurements.len(), 64);
    assert!(
        v.measurements.iter().all(|(_, m)| m.len() == 48),
        "SHA-384 measurements"
    );
    assert!(
        v.leaf_subject.contains("CN=GH100 A01 GSP FMC LF"),
        "{}",
        v.leaf_subject
    );
    assert_eq!(
        v.device_id.as_deref(),
        Some("NVIDIA:GH100:48B02D92494BADF4")
    );
    assert_eq!(v.fwid, Some(unhex(FIXTURE_FWID)));
    assert_eq!(v.driver_version.as_deref(), Some("550.90.07"));
    // The same through the verifier type and the serialisable evidence.
    let evidence = AttestationEvidence {
        report: report(),
        cert_chain_pem: CHAIN_PEM.into(),
    };
    assert_eq!(
        AttestationVerifier::default()
            .verify(&evidence, &nonce(), at())
            .unwrap(),
        v
    );
    // The chain also verifies without its copy of the root (the pinned one stands in).
    let blocks = pem_blocks(CHAIN_PEM);
    assert_eq!(blocks.len(), 5);
    assert!(verify(&report(), &blocks[..4].concat()).is_ok());
}

#[test]
fn embedded_root_is_the_fixture_root() {
    assert!(NVIDIA_DEVICE_ROOT_PEM.contains("BEGIN CERTIFICATE"));
    assert_eq!(root().subject(), "O=NVIDIA,CN=NVIDIA Device Identity CA");
}

#[test]
fn another_nonce_is_refused() {
    let mut other = nonce();
    other[31] ^= 1;
    match verify_report(&report(), CHAIN_PEM, &root(), &other, at()) {
        Err(AttestationError::NonceMismatch { expected, found }) => {
            assert_eq!(expected, other);
            assert_eq!(found, nonce());
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let mut r = report();
    let last = r.len() - 1;
    r[last] ^= 0x01;
    assert!(
        matches!(
            verify(&r, CHAIN_PEM),
            Err(AttestationError::BadSignature { .. })
        ),
        "{:?}",
        verify(&r, CHAIN_PEM)
    );
    // A zero scalar is not a signature at all.
    let mut z = report();
    let n = z.len();
    z[n - 96..n - 48].fill(0);
    assert_eq!(
        verify(&z, CHAIN_PEM),
        Err(AttestationError::MalformedSignature)
    );
}

#[test]
fn a_flipped_measurement_byte_is_refused() {
    let r0 = report();
    let parsed = AttestationReport::parse(&r0).unwrap();
    let first = &parsed.response.blocks[0].value;
    // Response header 8 bytes, block header 4, DMTF header 3: the first measurement value.
    let off = RESP + 8 + 4 + 3;
    assert_eq!(&r0[off..off + first.len()], first.as_slice());
    let mut r = r0.clone();
    r[off + 5] ^= 0x80;
    assert!(matches!(
        verify(&r, CHAIN_PEM),
        Err(AttestationError::BadSignature { .. })
    ));
    // And a flipped byte of the opaque data (the driver version) likewise.
    let mut r = r0;
    let pos = r.windows(9).position(|w| w == b"550.90.07").unwrap();
    r[pos] = b'9';
    assert!(matches!(
        verify(&r, CHAIN_PEM),
        Err(AttestationError::BadSignature { .. })
    ));
}

#[test]
fn truncated_reports_name_the_field() {
    let r = report();
    let cut = |n: usize| AttestationReport::parse(&r[..n]).unwrap_err();
    assert!(
        matches!(
            cut(r.len() - 10),
            ReportError::Truncated {
                message: Message::Response,
                field: "Signature",
                needed: 96,
                available: 86,
                ..
            }
        ),
        "{:?}",
        cut(r.len() - 10)
    );
    assert!(matches!(
        cut(20),
        ReportError::Truncated {
            message: Message::Request,
            field: "Nonce",
            ..
        }
    ));
    assert!(matches!(
        cut(0),
        ReportError::Truncated {
            message: Message::Request,
            field: "SPDMVersion",
            ..
        }
    ));
    assert!(matches!(
        cut(RESP + 100),
        ReportError::Truncated {
            field: "MeasurementRecord",
            ..
        }
    ));
    assert!(matches!(
        cut(RESP + 5),
        ReportError::Truncated {
            field: "MeasurementRecordLength",
            ..
        }
    ));
    // Through the full verification the error is the same, typed.
    assert!(matches!(
        verify(&r[..r.len() - 1], CHAIN_PEM),
        Err(AttestationError::Report(ReportError::Truncated { .. }))
    ));
}

#[test]
fn malformed_fields_are_named() {
    let r0 = report();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut r = r0.clone();
        f(&mut r);
        AttestationReport::parse(&r).unwrap_err()
    };
    assert_eq!(
        with(&|r| r[0] = 0x12),
        ReportError::UnsupportedVersion {
            message: Message::Request,
            found: 0x12
        }
    );
    assert_eq!(
        with(&|r| r[1] = 0x81),
        ReportError::WrongCode {
            message: Message::Request,
            expected: 0xE0,
            found: 0x81
        }
    );
    assert_eq!(
        with(&|r| r[2] = 0x00),
        ReportError::SignatureNotRequested { param1: 0 }
    );
    assert_eq!(
        with(&|r| r[RESP] = 0x10),
        ReportError::VersionMismatch {
            request: 0x11,
            response: 0x10
        }
    );
    assert_eq!(
        with(&|r| r[RESP + 1] = 0x7F),
        ReportError::WrongCode {
            message: Message::Response,
            expected: 0x60,
            found: 0x7F
        }
    );
    assert_eq!(with(&|r| r[RESP + 4] = 0), ReportError::NoMeasurementBlocks);
    assert!(matches!(
        with(&|r| r[RESP + 4] = 63),
        ReportError::BadLength {
            field: "MeasurementRecordLength",
            ..
        }
    ));
    // 65 blocks declared: the record ends inside the 65th.
    assert!(matches!(
        with(&|r| r[RESP + 4] = 65),
        ReportError::Truncated {
            field: "MeasurementBlock.Index",
            ..
        }
    ));
    // Block 1's specification byte, then its DMTF value size.
    assert_eq!(
        with(&|r| r[RESP + 9] = 0x02),
        ReportError::NotDmtf {
            index: 1,
            found: 0x02
        }
    );
    assert!(matches!(
        with(&|r| r[RESP + 13] = 47),
        ReportError::BadLength {
            field: "DMTFSpecMeasurementValueSize",
            ..
        }
    ));
    // Block 2 renumbered as 1.
    assert_eq!(
        with(&|r| r[RESP + 8 + 55] = 1),
        ReportError::DuplicateIndex(1)
    );
    assert!(matches!(
        with(&|r| r.push(0)),
        ReportError::TrailingBytes {
            after: "Signature",
            count: 1,
            ..
        }
    ));
    // The opaque length grown by one: one byte of the signature is read as half an entry type.
    let opaque_len_at = RESP + 8 + 3520 + 32;
    assert!(matches!(
        with(&|r| r[opaque_len_at] += 1),
        ReportError::Truncated {
            field: "OpaqueData.DataType",
            needed: 2,
            available: 1,
            ..
        }
    ));
}

#[test]
fn garbage_is_refused_with_typed_errors() {
    assert!(matches!(
        AttestationReport::parse_hex("not hex at all"),
        Err(ReportError::NotHex(_))
    ));
    let junk: Vec<u8> = (0..4117u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(AttestationReport::parse(&junk).is_err());
    assert!(matches!(
        verify(&junk, CHAIN_PEM),
        Err(AttestationError::Report(_))
    ));
    assert_eq!(
        verify_chain("", &root(), at()).unwrap_err(),
        ChainError::Empty
    );
    assert!(matches!(
        verify_chain(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &root(),
            at()
        ),
        Err(ChainError::Parse(_))
    ));
    for junk in [
        "garbage",
        "-----END CERTIFICATE-----",
        "x\n-----BEGIN CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----",
    ] {
        assert!(
            matches!(verify_chain(junk, &root(), at()), Err(ChainError::Parse(_))),
            "{junk:?}"
        );
    }
    let too_long = pem_blocks(CHAIN_PEM)[0].repeat(9);
    assert_eq!(
        verify_chain(&too_long, &root(), at()).unwrap_err(),
        ChainError::TooLong { max: 8 }
    );
    // Text between certificates is refused rather than skipped.
    let blocks = pem_blocks(CHAIN_PEM);
    let spliced = format!("{}junk\n{}", blocks[0], blocks[1..].concat());
    assert!(matches!(
        verify_chain(&spliced, &root(), at()),
        Err(ChainError::Parse(_))
    ));
    assert!(matches!(
        TrustAnchor::from_pem("garbage"),
        Err(ChainError::BadAnchor(_))
    ));
}

#[test]
fn a_chain_with_a_certificate_removed_is_refused() {
    let blocks = pem_blocks(CHAIN_PEM);
    let mut without = blocks.clone();
    without.remove(1); // the GSP BROM certificate between the leaf and the provisioner CA
    match verify(&report(), &without.concat()) {
        Err(AttestationError::Chain(ChainError::IssuerMismatch {
            index: 0,
            issuer,
            next,
            ..
        })) => {
            assert!(issuer.contains("GH100 A01 GSP BROM"), "{issuer}");
            assert!(next.contains("Provisioner ICA"), "{next}");
        }
        r => panic!("{r:?}"),
    }
    // The leaf alone does not reach the root either.
    assert!(matches!(
        verify(&report(), &blocks[0]),
        Err(AttestationError::Chain(ChainError::UntrustedRoot { .. }))
    ));
    // A chain in the wrong order neither.
    let mut swapped = blocks.clone();
    swapped.swap(1, 2);
    assert!(matches!(
        verify(&report(), &swapped.concat()),
        Err(AttestationError::Chain(ChainError::IssuerMismatch { .. }))
    ));
}

#[test]
fn the_chain_against_another_root_is_refused() {
    let rim_root = TrustAnchor::from_pem(RIM_ROOT_PEM).unwrap();
    assert_ne!(rim_root.subject(), root().subject());
    assert!(matches!(
        verify_report(&report(), CHAIN_PEM, &rim_root, &nonce(), at()),
        Err(AttestationError::Chain(ChainError::UntrustedRoot { .. }))
    ));
    let ca = TestCa::new(&root().subject());
    let other = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    assert!(matches!(
        verify_report(&report(), CHAIN_PEM, &other, &nonce(), at()),
        Err(AttestationError::Chain(
            ChainError::UntrustedRoot { .. } | ChainError::BadSignature { .. }
        ))
    ));
    // Without the chain's copy of the root, the top intermediate names the same issuer as the
    // look-alike root, so the refusal is the link's signature.
    let blocks = pem_blocks(CHAIN_PEM);
    match verify_chain(&blocks[..4].concat(), &other, at()) {
        Err(ChainError::BadSignature { index: 3, subject }) => {
            assert!(subject.contains("GH100 Identity"), "{subject}")
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_time_outside_the_windows_is_refused() {
    // 2021-06-01: before the root's notBefore (2021-11-05).
    let early = SystemTime::UNIX_EPOCH + Duration::from_secs(1_622_505_600);
    match verify_report(&report(), CHAIN_PEM, &root(), &nonce(), early) {
        Err(AttestationError::Chain(ChainError::NotYetValid {
            index: 4,
            not_before,
            ..
        })) => {
            assert_eq!(not_before, 1_636_070_400)
        }
        r => panic!("{r:?}"),
    }
    // 2022-02-01: the root is valid, the provisioner CA (notBefore 2022-03-01) is not yet.
    let feb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_643_673_600);
    assert!(matches!(
        verify_report(&report(), CHAIN_PEM, &root(), &nonce(), feb),
        Err(AttestationError::Chain(ChainError::NotYetValid {
            index: 2,
            ..
        }))
    ));
    // After 9999-12-31T23:59:59Z everything has expired.
    let late = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(matches!(
        verify_report(&report(), CHAIN_PEM, &root(), &nonce(), late),
        Err(AttestationError::Chain(ChainError::Expired { .. }))
    ));
}

fn challenge() -> Challenge {
    Challenge {
        version: 3,
        session: [7; 16],
        seed: [9; 32],
        claimed: GpuModel::H100Sxm,
        n: 1024,
        batch: 4,
        dtype: Dtype::Int8,
        deadline_us: 1_000_000,
        provider: None,
    }
}

#[test]
fn the_session_path_expects_the_session_nonce() {
    let provider = ProviderId::from_label("provider");
    let evidence = AttestationEvidence {
        report: report(),
        cert_chain_pem: CHAIN_PEM.into(),
    };
    match AttestationVerifier::default().verify_for_session(
        &evidence,
        &challenge(),
        &provider,
        at(),
    ) {
        Err(AttestationError::NonceMismatch { expected, found }) => {
            assert_eq!(expected, session_nonce(&challenge(), &provider));
            assert_eq!(found, nonce());
        }
        r => panic!("{r:?}"),
    }
}

/// A throwaway P-384 CA: root, one intermediate, and leaves signed by the intermediate.
struct TestCa {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

fn dn(rfc4514: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    // Pushed in RFC 4514 reverse order, so that the name prints back as given.
    for part in rfc4514.split(',').rev() {
        let (k, v) = part.split_once('=').unwrap();
        let t = match k {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "C" => DnType::CountryName,
            _ => panic!("{k}"),
        };
        dn.push(t, v);
    }
    dn
}

fn params(name: &str, ca: IsCa, usages: Vec<KeyUsagePurpose>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = dn(name);
    p.is_ca = ca;
    p.key_usages = usages;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    p
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

impl TestCa {
    fn new(root_name: &str) -> Self {
        Self::with_intermediate(root_name, IsCa::Ca(BasicConstraints::Unconstrained))
    }

    fn with_intermediate(root_name: &str, intermediate_ca: IsCa) -> Self {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let root_params = params(
            root_name,
            IsCa::Ca(BasicConstraints::Unconstrained),
            ca_usages(),
        );
        let root_pem = root_params.self_signed(&root_key).unwrap().pem();
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let int_params = params("CN=Test Intermediate,O=Test", intermediate_ca, ca_usages());
        let intermediate_pem = int_params.signed_by(&int_key, &root_issuer).unwrap().pem();
        TestCa {
            root_pem,
            intermediate_pem,
            intermediate: Issuer::new(int_params, int_key),
        }
    }

    /// A leaf certificate (optionally certifying `fwid` the Hopper way) and its signing key.
    fn leaf(&self, fwid: Option<&[u8]>) -> (String, SigningKey) {
        self.leaf_with(fwid, None)
    }

    /// A leaf as [`TestCa::leaf`], with one more extension.
    fn leaf_with(
        &self,
        fwid: Option<&[u8]>,
        extra: Option<CustomExtension>,
    ) -> (String, SigningKey) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut p = params(
            "CN=Test GPU Leaf,O=Test",
            IsCa::ExplicitNoCa,
            vec![KeyUsagePurpose::DigitalSignature],
        );
        if let Some(fwid) = fwid {
            // SEQUENCE { OCTET STRING fwid }: the FWID is the extension's last 48 bytes.
            let mut content = vec![0x30, 0x32, 0x04, 0x30];
            content.extend_from_slice(fwid);
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[2, 23, 133, 5, 4, 1],
                content,
            )];
        }
        p.custom_extensions.extend(extra);
        let pem = p.signed_by(&key, &self.intermediate).unwrap().pem();
        let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap();
        (pem, signing)
    }

    fn chain(&self, leaf_pem: &str) -> String {
        format!("{leaf_pem}{}{}", self.intermediate_pem, self.root_pem)
    }
}

/// The recorded report with `nonce` in its request, re-signed by `key`.
fn forged_report(nonce: &[u8; 32], key: &SigningKey) -> Vec<u8> {
    let mut r = report();
    r[4..36].copy_from_slice(nonce);
    let n = r.len();
    let sig: Signature = key.sign(&r[..n - 96]);
    r[n - 96..].copy_from_slice(&sig.to_bytes());
    r
}

#[test]
fn a_report_signed_for_the_session_verifies_under_its_own_root_only() {
    let provider = ProviderId::from_label("provider");
    let ca = TestCa::new("CN=Test Root,O=Test");
    let (leaf, key) = ca.leaf(Some(&unhex(FIXTURE_FWID)));
    let nonce = session_nonce(&challenge(), &provider);
    let evidence = AttestationEvidence {
        report: forged_report(&nonce, &key),
        cert_chain_pem: ca.chain(&leaf),
    };
    let test_root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let v = AttestationVerifier::new(test_root.clone())
        .verify_for_session(&evidence, &challenge(), &provider, at())
        .unwrap();
    assert_eq!(v.nonce, nonce);
    assert_eq!(v.leaf_subject, "CN=Test GPU Leaf,O=Test");
    // Another provider, or another session, expects another nonce.
    let other = ProviderId::from_label("other");
    assert!(matches!(
        AttestationVerifier::new(test_root.clone()).verify_for_session(
            &evidence,
            &challenge(),
            &other,
            at()
        ),
        Err(AttestationError::NonceMismatch { .. })
    ));
    let mut next = challenge();
    next.session[0] ^= 1;
    assert!(matches!(
        AttestationVerifier::new(test_root).verify_for_session(&evidence, &next, &provider, at()),
        Err(AttestationError::NonceMismatch { .. })
    ));
    // The pinned NVIDIA root refuses the self-made chain.
    assert!(matches!(
        AttestationVerifier::default().verify_for_session(&evidence, &challenge(), &provider, at()),
        Err(AttestationError::Chain(ChainError::UntrustedRoot { .. }))
    ));
}

#[test]
fn a_report_signed_by_another_key_than_the_leaf_is_refused() {
    let ca = TestCa::new("CN=Test Root,O=Test");
    let (leaf, _) = ca.leaf(Some(&unhex(FIXTURE_FWID)));
    let (_, other_key) = ca.leaf(None);
    let root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let r = forged_report(&nonce(), &other_key);
    assert!(matches!(
        verify_report(&r, &ca.chain(&leaf), &root, &nonce(), at()),
        Err(AttestationError::BadSignature { .. })
    ));
}

#[test]
fn a_leaf_certifying_another_firmware_id_is_refused() {
    let ca = TestCa::new("CN=Test Root,O=Test");
    let root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let (leaf, key) = ca.leaf(Some(&[0x11; 48]));
    match verify_report(
        &forged_report(&nonce(), &key),
        &ca.chain(&leaf),
        &root,
        &nonce(),
        at(),
    ) {
        Err(AttestationError::FwidMismatch {
            report,
            certificate,
        }) => {
            assert_eq!(report, unhex(FIXTURE_FWID));
            assert_eq!(certificate, Some(vec![0x11; 48]));
        }
        r => panic!("{r:?}"),
    }
    let (bare, key) = ca.leaf(None);
    assert!(matches!(
        verify_report(
            &forged_report(&nonce(), &key),
            &ca.chain(&bare),
            &root,
            &nonce(),
            at()
        ),
        Err(AttestationError::FwidMismatch {
            certificate: None,
            ..
        })
    ));
}

#[test]
fn an_issuer_that_is_not_a_ca_is_refused() {
    let ca = TestCa::with_intermediate("CN=Test Root,O=Test", IsCa::ExplicitNoCa);
    let root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let (leaf, key) = ca.leaf(Some(&unhex(FIXTURE_FWID)));
    match verify_report(
        &forged_report(&nonce(), &key),
        &ca.chain(&leaf),
        &root,
        &nonce(),
        at(),
    ) {
        Err(AttestationError::Chain(ChainError::NotACa {
            index: 1, reason, ..
        })) => {
            assert!(reason.contains("not a CA"), "{reason}")
        }
        r => panic!("{r:?}"),
    }
    let ca = TestCa::with_intermediate("CN=Test Root,O=Test", IsCa::NoCa);
    let root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let (leaf, key) = ca.leaf(Some(&unhex(FIXTURE_FWID)));
    assert!(matches!(
        verify_report(
            &forged_report(&nonce(), &key),
            &ca.chain(&leaf),
            &root,
            &nonce(),
            at()
        ),
        Err(AttestationError::Chain(ChainError::NotACa { index: 1, .. }))
    ));
}

#[test]
fn no_truncation_parses_and_no_flipped_byte_verifies() {
    let r = report();
    for len in 0..r.len() {
        assert!(
            AttestationReport::parse(&r[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    let chain = verify_chain(CHAIN_PEM, &root(), at()).unwrap();
    let key = chain.leaf_key();
    // Every byte is covered by the signature or is the signature; a stride (prime, so that it
    // lands on every field) keeps the debug-build run to seconds.
    for pos in (0..r.len()).step_by(41).chain([r.len() - 1]) {
        let mut f = r.clone();
        f[pos] ^= 0x20;
        let accepted = AttestationReport::parse(&f).is_ok_and(|p| {
            Signature::from_slice(&p.response.signature).is_ok_and(|s| {
                p384::ecdsa::signature::Verifier::verify(key, p.signed_bytes(), &s).is_ok()
            })
        });
        assert!(!accepted, "flipping byte {pos} still verifies");
    }
}

#[test]
fn an_unknown_critical_extension_is_refused() {
    let ca = TestCa::new("CN=Test Root,O=Test");
    let root = TrustAnchor::from_pem(&ca.root_pem).unwrap();
    let fwid = unhex(FIXTURE_FWID);
    let ext = |critical: bool| {
        let mut e =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        e.set_criticality(critical);
        e
    };
    // Not critical: ignored, the report verifies.
    let (leaf, key) = ca.leaf_with(Some(&fwid), Some(ext(false)));
    assert!(
        verify_report(
            &forged_report(&nonce(), &key),
            &ca.chain(&leaf),
            &root,
            &nonce(),
            at()
        )
        .is_ok()
    );
    // Critical: refused, naming the extension.
    let (leaf, key) = ca.leaf_with(Some(&fwid), Some(ext(true)));
    match verify_report(
        &forged_report(&nonce(), &key),
        &ca.chain(&leaf),
        &root,
        &nonce(),
        at(),
    ) {
        Err(AttestationError::Chain(ChainError::UnknownCriticalExtension {
            index: 0,
            oid,
            ..
        })) => {
            assert_eq!(oid, "1.3.6.1.4.1.99999.1")
        }
        r => panic!("{r:?}"),
    }
}
