// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";

/// @title SpheronOperators
/// @notice The staked parties whose signatures decide on chain: matching operators (a quorum
/// of them signs each order's match, modelled on EigenLayer's ECDSAStakeRegistry and ECDSA
/// certificate checks) and proof-of-GPU verifiers (their signed verdicts are the evidence a
/// provider is slashed on).
///
/// Each party stakes SPHN here (real token transfers, held by this contract). Weights are
/// checkpointed on `block.timestamp` (never `block.number`, which is the L1 block on
/// Arbitrum), so a quorum is measured against the stake at the order's bid deadline, and a
/// party who leaves keeps its stake slashable for `unbondingPeriod`.
///
/// Equivocation: two signatures by one operator over different `Match` results for the same
/// order are a proof anyone may submit with `reportEquivocation`; the operator loses
/// `equivocationSlashBps` of its stake (once per order), the reporter gets at most
/// `MAX_REPORTER_BPS` of that, the rest is burned.
///
/// Audit: the `auditor` contract (`SpheronAudit`, set once by this contract's deployer with
/// `setAuditor`) slashes a verifier whose failed verdict a randomly assigned second verifier
/// overturned (`slashVerifier`); the slash is burned.
///
/// Invariant: `sphn.balanceOf(this) >= sum(staked + unbonding)` over all parties.
contract SpheronOperators is EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Checkpoints for Checkpoints.Trace208;

    /// @notice What a party does.
    enum Kind {
        None,
        Operator,
        Verifier
    }

    /// @notice A match result, as every operator signs it (EIP-712).
    struct Match {
        uint64 orderId;
        bytes32 bidsDigest;
        address winner;
        uint128 price;
        uint64 seed;
        uint32 matcherVersion;
    }

    /// @notice A registered party.
    struct Party {
        Kind kind;
        uint128 staked;
        uint128 unbonding;
        uint40 releaseAt;
        string endpoint;
    }

    /// @notice EIP-712 type hash of `Match`.
    bytes32 public constant MATCH_TYPEHASH = keccak256(
        "Match(uint64 orderId,bytes32 bidsDigest,address winner,uint128 price,uint64 seed,uint32 matcherVersion)"
    );
    /// @notice Highest share of a slash paid to its reporter (10%).
    uint16 public constant MAX_REPORTER_BPS = 1_000;
    /// @notice Where burned stake goes.
    address public constant BURN = 0x000000000000000000000000000000000000dEaD;
    /// @notice Longest endpoint string, in bytes.
    uint256 public constant MAX_ENDPOINT_BYTES = 256;

    /// @notice The token stakes are held in.
    IERC20 public immutable sphn;
    /// @notice Seconds a leaving party's stake stays slashable.
    uint40 public immutable unbondingPeriod;
    /// @notice Minimum stake to register (and to stay registered after partial exits).
    uint128 public immutable minStake;
    /// @notice Share of an equivocating operator's stake slashed, basis points.
    uint16 public immutable equivocationSlashBps;
    /// @notice Share of a slash paid to the reporter, basis points (at most MAX_REPORTER_BPS).
    uint16 public immutable reporterBps;

    mapping(address => Party) internal _parties;
    /// @dev Weights per kind, so a signer's kind needs no separate read.
    mapping(Kind => mapping(address => Checkpoints.Trace208)) internal _weights;
    mapping(Kind => Checkpoints.Trace208) internal _totals;
    /// @dev A party's weight and when it last changed, in one slot: a signature check at a
    /// time after that change reads only this (the checkpoints serve older times).
    struct Latest {
        uint48 since;
        uint208 weight;
    }

    mapping(Kind => mapping(address => Latest)) internal _latest;
    mapping(Kind => address[]) internal _lists;
    /// @notice Whether `operator` was already slashed for equivocating on `orderId`.
    mapping(address => mapping(uint64 => bool)) public equivocationSlashed;
    /// @notice Who deployed this contract: the only account that may set `auditor` (once).
    address public immutable deployer;
    /// @notice The contract that may slash verifiers on overturned verdicts (zero: none yet).
    address public auditor;

    /// @notice A party registered (or topped up its stake).
    event PartyRegistered(address indexed party, Kind kind, string endpoint, uint256 staked);
    /// @notice A party started leaving with `amount` of its stake.
    event ExitRequested(address indexed party, uint256 amount, uint256 releaseAt);
    /// @notice Unbonded stake went back to the party.
    event ExitWithdrawn(address indexed party, uint256 amount);
    /// @notice An operator was slashed for signing two results for one order.
    event EquivocationSlashed(
        address indexed operator, uint64 indexed orderId, address indexed reporter, uint256 slashed, uint256 reward
    );
    /// @notice The auditor contract was set.
    event AuditorSet(address indexed auditor);
    /// @notice A verifier was slashed by the auditor (its verdict `evidence` was overturned); the
    /// slash is burned.
    event VerifierSlashed(address indexed verifier, bytes32 indexed evidence, uint256 slashed);

    /// @notice Zero where a positive amount is required.
    error ZeroAmount();
    /// @notice A stake below `minStake`.
    error StakeTooLow(uint256 staked, uint256 minimum);
    /// @notice The caller is registered as the other kind.
    error KindMismatch(address party, Kind registered);
    /// @notice Not a registered party of the kind asked for.
    error NotRegistered(address party);
    /// @notice The endpoint is empty or longer than MAX_ENDPOINT_BYTES.
    error BadEndpoint(uint256 length);
    /// @notice More asked for than staked.
    error InsufficientStake(uint256 requested, uint256 staked);
    /// @notice Nothing is unbonding, or the unbonding period has not ended.
    error NotWithdrawable(uint256 releaseAt);
    /// @notice Signers must be strictly ascending (sorted, unique) and match the signatures.
    error SignersNotSorted(uint256 index);
    /// @notice Signature `index` does not recover to its signer.
    error BadSignature(uint256 index);
    /// @notice Signer `index` had no weight of the required kind at the reference time.
    error SignerNotRegistered(uint256 index, address signer);
    /// @notice `signers` and `signatures` differ in length.
    error LengthMismatch(uint256 signers, uint256 signatures);
    /// @notice The two results are not an equivocation (other order, or the same result).
    error NotEquivocation();
    /// @notice This operator was already slashed for this order.
    error AlreadySlashed(address operator, uint64 orderId);
    /// @notice A basis-point parameter out of range.
    error BpsOutOfRange(uint256 bps);
    /// @notice An amount does not fit 128 bits.
    error AmountOverflow();
    /// @notice Only the deployer may set the auditor.
    error NotDeployer(address caller);
    /// @notice The auditor is already set (or the zero address was given).
    error AuditorFixed(address auditor);
    /// @notice Only the auditor contract may slash verifiers.
    error NotAuditor(address caller);

    constructor(
        address sphn_,
        uint40 unbondingPeriod_,
        uint128 minStake_,
        uint16 equivocationSlashBps_,
        uint16 reporterBps_
    ) EIP712("SpheronOperators", "1") {
        if (minStake_ == 0) revert ZeroAmount();
        if (equivocationSlashBps_ == 0 || equivocationSlashBps_ > 10_000) revert BpsOutOfRange(equivocationSlashBps_);
        if (reporterBps_ > MAX_REPORTER_BPS) revert BpsOutOfRange(reporterBps_);
        sphn = IERC20(sphn_);
        unbondingPeriod = unbondingPeriod_;
        minStake = minStake_;
        equivocationSlashBps = equivocationSlashBps_;
        reporterBps = reporterBps_;
        deployer = msg.sender;
    }

    /// @notice Sets the auditor contract (once, by the deployer), the only caller of
    /// `slashVerifier`.
    function setAuditor(address auditor_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (auditor != address(0) || auditor_ == address(0)) revert AuditorFixed(auditor);
        auditor = auditor_;
        emit AuditorSet(auditor_);
    }

    // ---------------------------------------------------------------- membership

    /// @notice Registers the caller as `kind` (or tops up its stake and updates its endpoint)
    /// with `amount` SPHN pulled from its wallet; the total must reach `minStake`.
    function register(Kind kind, string calldata endpoint, uint128 amount) external nonReentrant {
        if (kind == Kind.None) revert KindMismatch(msg.sender, Kind.None);
        if (bytes(endpoint).length == 0 || bytes(endpoint).length > MAX_ENDPOINT_BYTES) {
            revert BadEndpoint(bytes(endpoint).length);
        }
        Party storage p = _parties[msg.sender];
        if (p.kind != Kind.None && p.kind != kind) revert KindMismatch(msg.sender, p.kind);
        uint256 received = 0;
        if (amount > 0) {
            uint256 before = sphn.balanceOf(address(this));
            sphn.safeTransferFrom(msg.sender, address(this), amount);
            received = sphn.balanceOf(address(this)) - before;
        }
        uint256 staked = uint256(p.staked) + received;
        if (staked > type(uint128).max) revert AmountOverflow();
        if (staked < minStake) revert StakeTooLow(staked, minStake);
        if (p.kind == Kind.None) {
            p.kind = kind;
            _lists[kind].push(msg.sender);
        }
        p.staked = uint128(staked);
        p.endpoint = endpoint;
        _setWeight(msg.sender, kind, staked);
        emit PartyRegistered(msg.sender, kind, endpoint, staked);
    }

    /// @notice Starts withdrawing `amount` of the caller's stake: its weight drops now, the
    /// tokens stay slashable until `unbondingPeriod` has passed. What is left staked must be
    /// zero (leaving) or at least `minStake`.
    function requestExit(uint128 amount) external {
        Party storage p = _parties[msg.sender];
        if (p.kind == Kind.None) revert NotRegistered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        if (amount > p.staked) revert InsufficientStake(amount, p.staked);
        uint128 left = p.staked - amount;
        if (left != 0 && left < minStake) revert StakeTooLow(left, minStake);
        p.staked = left;
        p.unbonding += amount;
        p.releaseAt = uint40(block.timestamp) + unbondingPeriod;
        _setWeight(msg.sender, p.kind, left);
        emit ExitRequested(msg.sender, amount, p.releaseAt);
    }

    /// @notice Pays the caller's unbonded stake back to its wallet.
    function withdrawExit() external nonReentrant {
        Party storage p = _parties[msg.sender];
        uint128 amount = p.unbonding;
        if (amount == 0 || block.timestamp < p.releaseAt) revert NotWithdrawable(p.releaseAt);
        p.unbonding = 0;
        sphn.safeTransfer(msg.sender, amount);
        emit ExitWithdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------- certificates

    /// @notice The EIP-712 digest operators sign for `m`.
    function matchDigest(Match calldata m) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(MATCH_TYPEHASH, m.orderId, m.bidsDigest, m.winner, m.price, m.seed, m.matcherVersion)
            )
        );
    }

    /// @notice The EIP-712 digest of an arbitrary struct hash under this contract's domain
    /// (the market uses it for verifiers' verdicts).
    function typedDigest(bytes32 structHash) external view returns (bytes32) {
        return _hashTypedDataV4(structHash);
    }

    /// @notice Checks signatures over `digest` by parties of `kind`, weighted by their stake
    /// at time `at`; reverts on unsorted or duplicate signers, a bad signature, or a signer
    /// with no weight then.
    /// @return signed the signers' total weight at `at`
    /// @return total the total weight of `kind` at `at`
    function checkSignatures(
        Kind kind,
        bytes32 digest,
        uint48 at,
        address[] calldata signers,
        bytes[] calldata signatures
    ) external view returns (uint256 signed, uint256 total) {
        return _checkSignatures(kind, digest, at, signers, signatures);
    }

    /// @notice `checkSignatures` by operators over the digest of `m`, in one call (what the
    /// market's `submitMatch` uses).
    function checkMatch(Match calldata m, uint48 at, address[] calldata signers, bytes[] calldata signatures)
        external
        view
        returns (uint256 signed, uint256 total)
    {
        return _checkSignatures(Kind.Operator, matchDigest(m), at, signers, signatures);
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slashes an operator who signed two different results for the same order.
    /// Anyone may call it; the caller is paid `reporterBps` of what is slashed.
    function reportEquivocation(Match calldata a, bytes calldata sigA, Match calldata b, bytes calldata sigB)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        if (a.orderId != b.orderId) revert NotEquivocation();
        bytes32 da = matchDigest(a);
        bytes32 db = matchDigest(b);
        if (da == db) revert NotEquivocation();
        address signer = _recover(da, sigA, 0);
        if (_recover(db, sigB, 1) != signer) revert BadSignature(1);
        slashed = _slashEquivocation(signer, a.orderId);
    }

    /// @notice Slashes `bps` of verifier `verifier`'s stake (staked first, then unbonding) and
    /// burns it: the auditor calls it when a second verifier overturned `verifier`'s verdict
    /// `evidence`. Below `minStake` what is left starts unbonding, as for equivocation.
    /// @return slashed what was burned (zero for a verifier with nothing left)
    function slashVerifier(address verifier, uint16 bps, bytes32 evidence)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        if (msg.sender != auditor || msg.sender == address(0)) revert NotAuditor(msg.sender);
        if (bps > 10_000) revert BpsOutOfRange(bps);
        Party storage p = _parties[verifier];
        if (p.kind != Kind.Verifier) revert NotRegistered(verifier);
        slashed = (uint256(p.staked) + p.unbonding) * bps / 10_000;
        if (slashed == 0) return 0;
        _takeStake(p, verifier, Kind.Verifier, slashed);
        sphn.safeTransfer(BURN, slashed);
        emit VerifierSlashed(verifier, evidence, slashed);
    }

    // ---------------------------------------------------------------- views

    /// @notice A party's registration and stake.
    function partyOf(address party) external view returns (Party memory) {
        return _parties[party];
    }

    /// @notice A party's weight (stake of its kind) at time `at`.
    function weightAt(address party, uint48 at) external view returns (uint256) {
        return _weights[_parties[party].kind][party].upperLookupRecent(at);
    }

    /// @notice The total weight of `kind` at time `at`.
    function totalWeightAt(Kind kind, uint48 at) external view returns (uint256) {
        return _totals[kind].upperLookupRecent(at);
    }

    /// @notice Every party of `kind` that ever registered, in order of registration.
    function partiesOf(Kind kind) external view returns (address[] memory) {
        return _lists[kind];
    }

    /// @notice Whether `party` is a `kind` with stake now.
    function isActive(Kind kind, address party) external view returns (bool) {
        return _parties[party].kind == kind && _parties[party].staked > 0;
    }

    // ---------------------------------------------------------------- internals

    function _checkSignatures(
        Kind kind,
        bytes32 digest,
        uint48 at,
        address[] calldata signers,
        bytes[] calldata signatures
    ) internal view returns (uint256 signed, uint256 total) {
        if (signers.length != signatures.length) revert LengthMismatch(signers.length, signatures.length);
        mapping(address => Latest) storage latest = _latest[kind];
        address last = address(0);
        for (uint256 i = 0; i < signers.length; ++i) {
            address s = signers[i];
            if (s <= last) revert SignersNotSorted(i);
            last = s;
            bytes calldata sig = signatures[i];
            if (sig.length != 65) revert BadSignature(i);
            bytes32 r;
            bytes32 sv;
            uint8 v;
            assembly ("memory-safe") {
                r := calldataload(sig.offset)
                sv := calldataload(add(sig.offset, 0x20))
                v := byte(0, calldataload(add(sig.offset, 0x40)))
            }
            (address got, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, sv);
            if (err != ECDSA.RecoverError.NoError || got != s) revert BadSignature(i);
            // Only parties of `kind` have weights of that kind.
            Latest memory l = latest[s];
            uint256 w = l.since <= at ? l.weight : _weights[kind][s].upperLookupRecent(at);
            if (w == 0) revert SignerNotRegistered(i, s);
            signed += w;
        }
        total = _totals[kind].upperLookupRecent(at);
    }

    function _recover(bytes32 digest, bytes calldata sig, uint256 index) internal pure returns (address) {
        (address got, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, sig);
        if (err != ECDSA.RecoverError.NoError) revert BadSignature(index);
        return got;
    }

    function _slashEquivocation(address operator, uint64 orderId) internal returns (uint256 slashed) {
        Party storage p = _parties[operator];
        if (p.kind != Kind.Operator) revert NotRegistered(operator);
        if (equivocationSlashed[operator][orderId]) revert AlreadySlashed(operator, orderId);
        equivocationSlashed[operator][orderId] = true;
        uint256 base = uint256(p.staked) + p.unbonding;
        slashed = base * equivocationSlashBps / 10_000;
        if (slashed == 0) revert ZeroAmount();
        _takeStake(p, operator, Kind.Operator, slashed);
        uint256 reward = slashed * reporterBps / 10_000;
        if (reward > 0) sphn.safeTransfer(msg.sender, reward);
        sphn.safeTransfer(BURN, slashed - reward);
        emit EquivocationSlashed(operator, orderId, msg.sender, slashed, reward);
    }

    /// @dev Takes `amount` (at most staked + unbonding) from `p`: staked first, then unbonding;
    /// below the minimum the rest starts unbonding and the party leaves.
    function _takeStake(Party storage p, address party, Kind kind, uint256 amount) internal {
        uint256 fromStaked = amount < p.staked ? amount : p.staked;
        p.staked -= uint128(fromStaked);
        p.unbonding -= uint128(amount - fromStaked);
        if (p.staked != 0 && p.staked < minStake) {
            p.unbonding += p.staked;
            p.staked = 0;
            p.releaseAt = uint40(block.timestamp) + unbondingPeriod;
        }
        _setWeight(party, kind, p.staked);
    }

    function _setWeight(address party, Kind kind, uint256 weight) internal {
        uint48 now_ = uint48(block.timestamp);
        uint256 old = _weights[kind][party].latest();
        _weights[kind][party].push(now_, uint208(weight));
        _latest[kind][party] = Latest({since: now_, weight: uint208(weight)});
        uint256 total = _totals[kind].latest();
        _totals[kind].push(now_, uint208(total - old + weight));
    }
}
