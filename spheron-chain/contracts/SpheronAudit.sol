// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SpheronMarket} from "./SpheronMarket.sol";
import {SpheronOperators} from "./SpheronOperators.sol";

/// @title SpheronAudit
/// @notice The on-chain half of the Slark verifier network: uptime from verifiers' challenges,
/// rewards per valid verification, re-checked slashing cases, an accuracy ranking, tenants'
/// feedback and the operators' per-epoch tiers.
///
/// Epochs: `epochSecs` long from `genesis` (the deployment's block time).
///
/// Checks: an active verifier (`SpheronOperators`, `Kind.Verifier`) posts, for the current or
/// the previous epoch, how many challenges each provider passed and failed; at most
/// `maxChecksPerEpoch` per (epoch, verifier, provider); only providers the market lets bid
/// (registered, staked, not banned). Each pass ("a valid verification of a valid provider")
/// earns `rewardPerCheck` from the reward pool.
///
/// Cases: a failed verdict never slashes on one verifier's word. Its signer opens a case
/// with its signature; a second verifier is drawn from `blockhash(openedBlock + 1)` and the
/// case id over the verifiers that had stake just before the case opened, the accuser
/// excluded, so the accuser cannot pick it. Within `recheckWindowSecs` the assignee either
/// confirms (co-signs: the market slashes the provider, and the reporter's share the market
/// pays this contract is split between accuser and re-checker) or overturns (the accuser loses
/// `overturnSlashBps` of its verifier stake, burned). After the window the case expires with
/// nobody penalised. If `blockhash(openedBlock + 1)` is no longer available (more than 256
/// blocks later) and nobody recorded the assignee (`recordAssignee`), the most recent block
/// hash is used instead: weaker, as a verifier could then wait for a block that picks it.
///
/// Rewards: every payout is min(due, pool) and is owed, then claimed (`claimRewards`).
/// Invariant: `sphn.balanceOf(this) == pool + owedTotal` (plus whatever was sent to it
/// directly, outside `fundRewards`).
///
/// Tiers: operators holding at least 2/3 of the operator stake at the epoch's end sign
/// EIP-712 `Tiers{epoch, providersHash, tiersHash}` (this contract's domain "SpheronAudit",
/// "1") with providersHash = keccak256(abi.encodePacked(providers)) (each address
/// left-padded to 32 bytes, as Solidity packs arrays; strictly ascending) and tiersHash =
/// keccak256(tiers) (one byte per provider, in the same order). Submitted once per closed epoch, it sets each
/// provider's tier on the market (this contract holds TIER_ROLE) and pays `tierReward[tier]`.
contract SpheronAudit is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice A verifiers' verdict as the market's `Verdict`, with the market it is for.
    struct Verdict {
        address market;
        address provider;
        bytes32 session;
        bytes32 model;
        uint128 amount;
        uint64 issuedAt;
    }

    /// @notice Parameters fixed at deployment (rewards may be changed by the admin).
    struct Config {
        uint32 epochSecs;
        uint16 maxChecksPerEpoch;
        uint128 rewardPerCheck;
        uint16 overturnSlashBps;
        uint32 recheckWindowSecs;
        uint128[8] tierReward;
    }

    /// @notice A verifier's record. One slot of counters, one of money.
    struct Stats {
        uint64 passes;
        uint64 fails;
        uint32 confirmed;
        uint32 overturned;
        uint32 rechecks;
        uint128 rewarded;
    }

    /// @notice Lifecycle of a case.
    enum CaseState {
        None,
        Open,
        Confirmed,
        Overturned,
        Expired
    }

    /// @notice A case: a failed verdict waiting for its re-check.
    struct Case {
        // slot 0: the market's EIP-712 digest of the verdict
        bytes32 digest;
        // slot 1
        address accuser;
        uint40 openedAt;
        uint48 openedBlock;
        CaseState state;
        // slot 2: zero until recorded (first resolution or `recordAssignee`)
        address assignee;
    }

    /// @dev Per (epoch, provider): uptime from checks and tenants' feedback, one slot.
    struct EpochRecord {
        uint32 passes;
        uint32 fails;
        uint32 ratings;
        uint32 ratingSum;
    }

    /// @dev Checks by one verifier of one provider: `tag` is epoch + 1 (zero: unused).
    struct CheckCounter {
        uint64 tag0;
        uint16 count0;
        uint64 tag1;
        uint16 count1;
    }

    /// @dev Per verifier: its stats and what it is owed.
    struct Account {
        uint64 passes;
        uint64 fails;
        uint32 confirmed;
        uint32 overturned;
        uint32 rechecks;
        uint128 rewarded;
        uint128 owed;
    }

    /// @notice EIP-712 type hash of `Tiers`.
    bytes32 public constant TIERS_TYPEHASH =
        keccak256("Tiers(uint64 epoch,bytes32 providersHash,bytes32 tiersHash)");
    /// @notice The market's oldest acceptable verdict, in seconds (its VERDICT_MAX_AGE_SECS).
    uint256 public constant VERDICT_MAX_AGE_SECS = 1 days;

    /// @notice The market whose providers are audited.
    SpheronMarket public immutable market;
    /// @notice The verifiers' and operators' registry.
    SpheronOperators public immutable operators;
    /// @notice The reward token (the market's SPHN).
    IERC20 public immutable sphn;
    /// @notice May change the rewards (`setRewards`).
    address public immutable admin;
    /// @notice Block time of deployment: epoch 0 starts here.
    uint64 public immutable genesis;
    /// @notice Length of an epoch, seconds.
    uint32 public immutable epochSecs;
    /// @notice Most checks one verifier posts on one provider in one epoch.
    uint16 public immutable maxChecksPerEpoch;
    /// @notice Share of an accuser's verifier stake slashed when its verdict is overturned.
    uint16 public immutable overturnSlashBps;
    /// @notice Seconds after a case opens within which its assignee resolves it.
    uint32 public immutable recheckWindowSecs;

    /// @notice SPHN available for rewards.
    uint128 public pool;
    /// @notice SPHN owed to accounts, not yet claimed.
    uint128 public owedTotal;
    /// @notice Reward per passed check, SPHN base units.
    uint128 public rewardPerCheck;
    /// @notice How many cases were opened (ids start at 1).
    uint64 public caseCount;
    /// @notice Reward per provider of each tier, paid when an epoch's tiers are submitted.
    uint128[8] public tierReward;

    mapping(address => Account) internal _accounts;
    mapping(uint64 => mapping(address => EpochRecord)) internal _records;
    /// @dev Per (verifier, provider): checks posted in the last two epochs that had any, by
    /// epoch parity (only the current and the previous epoch take checks), so steady-state
    /// posting rewrites a used slot instead of filling a new one per epoch.
    mapping(address => mapping(address => CheckCounter)) internal _checks;
    mapping(uint64 => Case) internal _cases;
    /// @notice The case opened on a verdict (by the market's digest), zero if none.
    mapping(bytes32 => uint64) public caseOfVerdict;
    /// @notice Whether a lease was rated.
    mapping(uint64 => bool) public rated;
    /// @notice Whether an epoch's tiers were submitted.
    mapping(uint64 => bool) public tiersSubmitted;

    /// @notice SPHN entered the reward pool.
    event RewardsFunded(address indexed from, uint256 amount);
    /// @notice The admin changed the rewards.
    event RewardsSet(uint128 rewardPerCheck, uint128[8] tierReward);
    /// @notice An account claimed what it was owed.
    event RewardsClaimed(address indexed account, uint256 amount);
    /// @notice A verifier posted checks of a provider.
    event ChecksPosted(uint64 indexed epoch, address indexed verifier, address indexed provider, uint16 passes, uint16 fails);
    /// @notice A verifier was paid for its passes (min(due, pool)).
    event CheckRewards(uint64 indexed epoch, address indexed verifier, uint256 due, uint256 paid);
    /// @notice A case was opened on a failed verdict (the full verdict and the accuser's
    /// signature, for the re-checker).
    event CaseOpened(uint64 indexed caseId, address indexed accuser, address indexed provider, Verdict v, bytes sig);
    /// @notice A case's assignee was recorded.
    event CaseAssigned(uint64 indexed caseId, address indexed assignee);
    /// @notice The re-checker confirmed: the provider was slashed; `reward` (the market's
    /// reporter share) is split between accuser and re-checker.
    event CaseConfirmed(uint64 indexed caseId, address indexed accuser, address indexed rechecker, uint256 slashed, uint256 reward);
    /// @notice The re-checker overturned: the accuser's verifier stake was slashed by `slashed`.
    event CaseOverturned(uint64 indexed caseId, address indexed accuser, address indexed rechecker, uint256 slashed);
    /// @notice The re-check window passed with no resolution.
    event CaseExpired(uint64 indexed caseId);
    /// @notice A tenant rated its lease.
    event LeaseRated(uint64 indexed leaseId, address indexed provider, uint64 indexed epoch, uint8 score);
    /// @notice An epoch's tiers were written on the market.
    event TiersSubmitted(uint64 indexed epoch, uint256 providers, uint256 signedWeight, uint256 totalWeight, uint256 paid);

    /// @notice A zero address or zero amount where one is required.
    error Zero();
    /// @notice A configuration value out of range.
    error BadConfig(string what);
    /// @notice Only the admin may do this.
    error OnlyAdmin(address caller);
    /// @notice The caller is not an active registered verifier.
    error NotVerifier(address caller);
    /// @notice Arrays of different lengths.
    error LengthsDiffer(uint256 a, uint256 b);
    /// @notice Checks may be posted for the current or the previous epoch only.
    error EpochNotOpen(uint64 epoch, uint64 current);
    /// @notice More than `maxChecksPerEpoch` checks of `provider` by one verifier in `epoch`.
    error TooManyChecks(uint64 epoch, address provider, uint256 total, uint256 max);
    /// @notice The provider may not bid on the market (unregistered, unstaked or banned).
    error NotAProvider(address provider);
    /// @notice The verdict is for another market, has no amount, or is used.
    error BadCaseVerdict(string reason);
    /// @notice The verdict was issued in the future or more than `recheckWindowSecs` ago.
    error StaleVerdict(uint64 issuedAt, uint256 now_);
    /// @notice `sig` is not the caller's signature over the verdict.
    error NotAccuserSignature();
    /// @notice A case is already open (or was) on this verdict.
    error CaseExists(uint64 caseId);
    /// @notice No verifier other than the accuser can re-check.
    error NoRechecker();
    /// @notice No such case.
    error UnknownCase(uint64 caseId);
    /// @notice The case is not open.
    error CaseClosed(uint64 caseId, CaseState state);
    /// @notice The assignee is not known yet (the block after the opening is not mined).
    error NotAssignedYet(uint64 caseId);
    /// @notice Only the case's assignee may resolve it.
    error NotAssignee(uint64 caseId, address assignee);
    /// @notice The re-check window has passed (resolve) or not yet (expire).
    error RecheckWindow(uint64 caseId, uint256 deadline);
    /// @notice The verdict given does not hash to the case's.
    error VerdictMismatch(uint64 caseId);
    /// @notice A score outside 1..=5.
    error BadScore(uint8 score);
    /// @notice Only the lease's tenant may rate it.
    error NotLeaseTenant(uint64 leaseId, address caller);
    /// @notice The lease never started (or does not exist).
    error LeaseNotStarted(uint64 leaseId);
    /// @notice The lease was already rated.
    error AlreadyRated(uint64 leaseId);
    /// @notice Tiers may be submitted only for an epoch that has ended.
    error EpochNotClosed(uint64 epoch, uint64 current);
    /// @notice This epoch's tiers were already submitted.
    error TiersAlreadySubmitted(uint64 epoch);
    /// @notice The signers hold less than 2/3 of the operator stake at the epoch's end.
    error NoQuorum(uint256 signed, uint256 total);
    /// @notice A tier above 7.
    error TierOutOfRange(uint256 index, uint8 tier);
    /// @notice Providers must be strictly ascending (sorted, each once).
    error ProvidersNotSorted(uint256 index);

    constructor(address market_, address operators_, address sphn_, Config memory c, address admin_)
        EIP712("SpheronAudit", "1")
    {
        if (market_ == address(0) || operators_ == address(0) || sphn_ == address(0) || admin_ == address(0)) {
            revert Zero();
        }
        if (c.epochSecs == 0) revert BadConfig("epochSecs");
        if (c.maxChecksPerEpoch == 0) revert BadConfig("maxChecksPerEpoch");
        if (c.overturnSlashBps > 10_000) revert BadConfig("overturnSlashBps");
        // A verdict at most one window old, confirmed at most one window after opening, must
        // still be inside the market's verdict age.
        if (c.recheckWindowSecs == 0 || uint256(c.recheckWindowSecs) * 2 > VERDICT_MAX_AGE_SECS) {
            revert BadConfig("recheckWindowSecs");
        }
        market = SpheronMarket(market_);
        operators = SpheronOperators(operators_);
        sphn = IERC20(sphn_);
        admin = admin_;
        genesis = uint64(block.timestamp);
        epochSecs = c.epochSecs;
        maxChecksPerEpoch = c.maxChecksPerEpoch;
        overturnSlashBps = c.overturnSlashBps;
        recheckWindowSecs = c.recheckWindowSecs;
        rewardPerCheck = c.rewardPerCheck;
        tierReward = c.tierReward;
    }

    // ---------------------------------------------------------------- epochs

    /// @notice The epoch now.
    function currentEpoch() public view returns (uint64) {
        return uint64((block.timestamp - genesis) / epochSecs);
    }

    /// @notice When epoch `e` starts (block time, seconds).
    function epochStart(uint64 e) public view returns (uint256) {
        return uint256(genesis) + uint256(e) * epochSecs;
    }

    /// @notice When epoch `e` ends (exclusive).
    function epochEnd(uint64 e) public view returns (uint256) {
        return epochStart(e) + epochSecs;
    }

    // ---------------------------------------------------------------- rewards

    /// @notice Adds `amount` SPHN from the caller's wallet to the reward pool (what arrives).
    function fundRewards(uint256 amount) external nonReentrant {
        if (amount == 0) revert Zero();
        uint256 before = sphn.balanceOf(address(this));
        sphn.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = sphn.balanceOf(address(this)) - before;
        pool += uint128(received);
        emit RewardsFunded(msg.sender, received);
    }

    /// @notice Changes the rewards (admin).
    function setRewards(uint128 rewardPerCheck_, uint128[8] calldata tierReward_) external {
        if (msg.sender != admin) revert OnlyAdmin(msg.sender);
        rewardPerCheck = rewardPerCheck_;
        tierReward = tierReward_;
        emit RewardsSet(rewardPerCheck_, tierReward_);
    }

    /// @notice What `account` is owed and may claim.
    function rewardsOf(address account) external view returns (uint256) {
        return _accounts[account].owed;
    }

    /// @notice Pays the caller what it is owed.
    function claimRewards() external nonReentrant returns (uint256 amount) {
        Account storage a = _accounts[msg.sender];
        amount = a.owed;
        if (amount == 0) revert Zero();
        a.owed = 0;
        owedTotal -= uint128(amount);
        sphn.safeTransfer(msg.sender, amount);
        emit RewardsClaimed(msg.sender, amount);
    }

    // ---------------------------------------------------------------- checks

    /// @notice Posts the caller's checks of `providers` in `epoch` (current or previous):
    /// `passes[i]` passed and `fails[i]` failed challenges of `providers[i]`, added to what it
    /// posted before; at most `maxChecksPerEpoch` per provider and epoch. Passes are paid
    /// `rewardPerCheck` each from the pool.
    function postChecks(uint64 epoch, address[] calldata providers, uint16[] calldata passes, uint16[] calldata fails)
        external
    {
        uint256 n = providers.length;
        if (passes.length != n) revert LengthsDiffer(n, passes.length);
        if (fails.length != n) revert LengthsDiffer(n, fails.length);
        if (!operators.isActive(SpheronOperators.Kind.Verifier, msg.sender)) revert NotVerifier(msg.sender);
        uint64 cur = currentEpoch();
        if (epoch != cur && uint256(epoch) + 1 != cur) revert EpochNotOpen(epoch, cur);
        mapping(address => EpochRecord) storage recs = _records[epoch];
        uint256 totalPasses;
        uint256 totalFails;
        for (uint256 i = 0; i < n; ++i) {
            address p = providers[i];
            uint16 ps = passes[i];
            uint16 fs = fails[i];
            _count(epoch, p, uint256(ps) + fs);
            EpochRecord storage r = recs[p];
            r.passes += ps;
            r.fails += fs;
            totalPasses += ps;
            totalFails += fs;
            emit ChecksPosted(epoch, msg.sender, p, ps, fs);
        }
        Account storage a = _accounts[msg.sender];
        a.passes += uint64(totalPasses);
        a.fails += uint64(totalFails);
        if (totalPasses > 0) {
            uint256 due = totalPasses * rewardPerCheck;
            uint256 paid = _pay(a, due);
            emit CheckRewards(epoch, msg.sender, due, paid);
        }
    }

    /// @notice `provider`'s passed and failed challenges in `epoch`, over all verifiers.
    function uptimeOf(uint64 epoch, address provider) external view returns (uint32 passes, uint32 fails) {
        EpochRecord storage r = _records[epoch][provider];
        return (r.passes, r.fails);
    }

    /// @notice How many checks `verifier` posted on `provider` in `epoch`.
    /// (Known for the current and the previous epoch; zero for older ones.)
    function checksBy(uint64 epoch, address verifier, address provider) external view returns (uint16) {
        if (epoch == type(uint64).max) return 0;
        CheckCounter storage k = _checks[verifier][provider];
        uint64 tag = epoch + 1;
        if (epoch & 1 == 1) return k.tag1 == tag ? k.count1 : 0;
        return k.tag0 == tag ? k.count0 : 0;
    }

    // ---------------------------------------------------------------- cases

    /// @notice Opens a case on a failed verdict the caller (an active verifier) signed:
    /// `sig` is its signature over the market's `verdictDigest`. The verdict must be for this
    /// market, unused there, issued at most `recheckWindowSecs` ago; one case per verdict.
    function openCase(Verdict calldata v, bytes calldata sig) external returns (uint64 caseId) {
        if (!operators.isActive(SpheronOperators.Kind.Verifier, msg.sender)) revert NotVerifier(msg.sender);
        if (v.market != address(market)) revert BadCaseVerdict("another market");
        if (v.amount == 0) revert BadCaseVerdict("zero amount");
        if (v.issuedAt > block.timestamp || block.timestamp - v.issuedAt > recheckWindowSecs) {
            revert StaleVerdict(v.issuedAt, block.timestamp);
        }
        bytes32 digest = market.verdictDigest(_marketVerdict(v));
        uint64 existing = caseOfVerdict[digest];
        if (existing != 0) revert CaseExists(existing);
        if (market.verdictUsed(digest)) revert BadCaseVerdict("already used");
        (address got, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, sig);
        if (err != ECDSA.RecoverError.NoError || got != msg.sender) revert NotAccuserSignature();
        (, uint256 count) = _candidates(msg.sender, uint48(block.timestamp));
        if (count == 0) revert NoRechecker();
        caseId = ++caseCount;
        caseOfVerdict[digest] = caseId;
        _cases[caseId] = Case({
            digest: digest,
            accuser: msg.sender,
            openedAt: uint40(block.timestamp),
            openedBlock: uint48(block.number),
            state: CaseState.Open,
            assignee: address(0)
        });
        emit CaseOpened(caseId, msg.sender, v.provider, v, sig);
    }

    /// @notice The verifier assigned to re-check case `caseId`; zero until it can be drawn
    /// (the draw reads blockhash(openedBlock + 1), which only blocks from openedBlock + 2 on
    /// can read). Once recorded it never changes.
    function assigneeOf(uint64 caseId) public view returns (address) {
        Case storage c = _cases[caseId];
        if (c.state == CaseState.None) return address(0);
        if (c.assignee != address(0)) return c.assignee;
        return _draw(caseId, c);
    }

    /// @notice Records case `caseId`'s assignee now (anyone; keeps the draw on
    /// `blockhash(openedBlock + 1)` when resolution may come more than 256 blocks later).
    function recordAssignee(uint64 caseId) external returns (address) {
        return _assignee(caseId, _cases[caseId]);
    }

    /// @notice A case.
    function caseOf(uint64 caseId) external view returns (Case memory c) {
        c = _cases[caseId];
        if (c.assignee == address(0) && c.state != CaseState.None) c.assignee = _draw(caseId, c);
    }

    /// @notice The assignee confirms case `caseId`: `v` is the case's verdict, `accuserSig` the
    /// accuser's signature (from `CaseOpened`), `sig` the caller's. The market slashes the
    /// provider; the reporter's share it pays this contract goes to accuser and re-checker,
    /// half each (the odd unit to the re-checker).
    function confirmCase(uint64 caseId, Verdict calldata v, bytes calldata accuserSig, bytes calldata sig)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        Case storage c = _open(caseId);
        if (v.market != address(market)) revert VerdictMismatch(caseId);
        SpheronMarket.Verdict memory mv = _marketVerdict(v);
        if (market.verdictDigest(mv) != c.digest) revert VerdictMismatch(caseId);
        address accuser = c.accuser;
        c.state = CaseState.Confirmed;
        address[] memory signers = new address[](2);
        bytes[] memory sigs = new bytes[](2);
        (signers[0], sigs[0], signers[1], sigs[1]) =
            accuser < msg.sender ? (accuser, accuserSig, msg.sender, sig) : (msg.sender, sig, accuser, accuserSig);
        address token = address(sphn);
        uint256 before = market.accountOf(token, address(this)).available;
        slashed = market.slashWithVerdict(mv, signers, sigs);
        uint256 share = market.accountOf(token, address(this)).available - before;
        uint256 received;
        if (share > 0) {
            uint256 held = sphn.balanceOf(address(this));
            market.withdraw(token, share);
            received = sphn.balanceOf(address(this)) - held;
        }
        Account storage a = _accounts[accuser];
        Account storage r = _accounts[msg.sender];
        a.confirmed += 1;
        r.rechecks += 1;
        if (received > 0) {
            uint128 half = uint128(received / 2);
            uint128 rest = uint128(received) - half;
            a.owed += half;
            a.rewarded += half;
            r.owed += rest;
            r.rewarded += rest;
            owedTotal += uint128(received);
        }
        emit CaseConfirmed(caseId, accuser, msg.sender, slashed, received);
    }

    /// @notice The assignee overturns case `caseId`: the accuser's verifier stake is slashed by
    /// `overturnSlashBps` (burned). The assignee must still be an active verifier (confirming
    /// needs that too: the market checks its signature's weight now).
    function overturnCase(uint64 caseId) external returns (uint256 slashed) {
        Case storage c = _open(caseId);
        if (!operators.isActive(SpheronOperators.Kind.Verifier, msg.sender)) revert NotVerifier(msg.sender);
        c.state = CaseState.Overturned;
        address accuser = c.accuser;
        slashed = operators.slashVerifier(accuser, overturnSlashBps, c.digest);
        _accounts[accuser].overturned += 1;
        _accounts[msg.sender].rechecks += 1;
        emit CaseOverturned(caseId, accuser, msg.sender, slashed);
    }

    /// @notice Closes case `caseId` after its re-check window with nobody penalised (anyone).
    function expireCase(uint64 caseId) external {
        Case storage c = _cases[caseId];
        if (c.state == CaseState.None) revert UnknownCase(caseId);
        if (c.state != CaseState.Open) revert CaseClosed(caseId, c.state);
        uint256 deadline = uint256(c.openedAt) + recheckWindowSecs;
        if (block.timestamp <= deadline) revert RecheckWindow(caseId, deadline);
        c.state = CaseState.Expired;
        emit CaseExpired(caseId);
    }

    // ---------------------------------------------------------------- ranking

    /// @notice A verifier's record.
    function statsOf(address verifier) external view returns (Stats memory s) {
        Account storage a = _accounts[verifier];
        s = Stats({
            passes: a.passes,
            fails: a.fails,
            confirmed: a.confirmed,
            overturned: a.overturned,
            rechecks: a.rechecks,
            rewarded: a.rewarded
        });
    }

    /// @notice (passes + confirmed) * 10000 / (passes + confirmed + overturned); 0 with no record.
    function accuracyBps(address verifier) public view returns (uint16) {
        Account storage a = _accounts[verifier];
        return _accuracy(a.passes, a.confirmed, a.overturned);
    }

    /// @notice Every registered verifier by accuracy, best first; ties go to more checks
    /// (passes + fails), then to the earlier registration.
    function ranking() external view returns (address[] memory verifiers, uint16[] memory accuracy) {
        verifiers = operators.partiesOf(SpheronOperators.Kind.Verifier);
        uint256 n = verifiers.length;
        accuracy = new uint16[](n);
        uint256[] memory checks = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            Account storage a = _accounts[verifiers[i]];
            accuracy[i] = _accuracy(a.passes, a.confirmed, a.overturned);
            checks[i] = uint256(a.passes) + a.fails;
        }
        // Insertion sort, stable: the verifier set is small.
        for (uint256 i = 1; i < n; ++i) {
            address v = verifiers[i];
            uint16 acc = accuracy[i];
            uint256 ch = checks[i];
            uint256 j = i;
            while (j > 0 && (accuracy[j - 1] < acc || (accuracy[j - 1] == acc && checks[j - 1] < ch))) {
                verifiers[j] = verifiers[j - 1];
                accuracy[j] = accuracy[j - 1];
                checks[j] = checks[j - 1];
                --j;
            }
            verifiers[j] = v;
            accuracy[j] = acc;
            checks[j] = ch;
        }
    }

    // ---------------------------------------------------------------- feedback

    /// @notice The tenant of lease `leaseId` rates it 1..=5, once; counted in the current epoch
    /// for the lease's provider. Only a lease that is running or closed can be rated (the
    /// market's view does not tell a closed lease that never started from one that did).
    function rate(uint64 leaseId, uint8 score) external {
        if (score == 0 || score > 5) revert BadScore(score);
        SpheronMarket.OrderView memory o = market.getOrder(leaseId);
        if (o.tenant != msg.sender) revert NotLeaseTenant(leaseId, msg.sender);
        if (o.state != SpheronMarket.State.Leased && o.state != SpheronMarket.State.Closed) {
            revert LeaseNotStarted(leaseId);
        }
        if (rated[leaseId]) revert AlreadyRated(leaseId);
        rated[leaseId] = true;
        uint64 epoch = currentEpoch();
        EpochRecord storage r = _records[epoch][o.provider];
        r.ratings += 1;
        r.ratingSum += score;
        emit LeaseRated(leaseId, o.provider, epoch, score);
    }

    /// @notice Tenants' ratings of `provider` in `epoch`: how many and their sum.
    function feedbackOf(uint64 epoch, address provider) external view returns (uint32 count, uint32 sum) {
        EpochRecord storage r = _records[epoch][provider];
        return (r.ratings, r.ratingSum);
    }

    // ---------------------------------------------------------------- tiers

    /// @notice The EIP-712 digest operators sign for `epoch`'s tiers (one byte per provider).
    function tiersDigest(uint64 epoch, address[] calldata providers, bytes calldata tiers)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(TIERS_TYPEHASH, epoch, keccak256(abi.encodePacked(providers)), keccak256(tiers)))
        );
    }

    /// @notice Writes closed epoch `epoch`'s tiers on the market, signed by operators holding
    /// at least 2/3 of the operator stake at the epoch's end (signers strictly ascending), once
    /// per epoch; providers strictly ascending (so none is paid twice); pays each provider
    /// `tierReward[tier]` from the pool.
    function submitTiers(
        uint64 epoch,
        address[] calldata providers,
        bytes calldata tiers,
        address[] calldata signers,
        bytes[] calldata signatures
    ) external {
        uint64 cur = currentEpoch();
        if (epoch >= cur) revert EpochNotClosed(epoch, cur);
        if (tiersSubmitted[epoch]) revert TiersAlreadySubmitted(epoch);
        uint256 n = providers.length;
        if (tiers.length != n) revert LengthsDiffer(n, tiers.length);
        (uint256 signed, uint256 total) = operators.checkSignatures(
            SpheronOperators.Kind.Operator, tiersDigest(epoch, providers, tiers), uint48(epochEnd(epoch)), signers, signatures
        );
        if (total == 0 || signed * 3 < total * 2) revert NoQuorum(signed, total);
        tiersSubmitted[epoch] = true;
        uint256 paid;
        uint256 left = pool;
        address last;
        for (uint256 i = 0; i < n; ++i) {
            address p = providers[i];
            if (p <= last) revert ProvidersNotSorted(i);
            last = p;
            uint8 t = uint8(tiers[i]);
            if (t > 7) revert TierOutOfRange(i, t);
            market.setTier(p, t);
            uint256 due = tierReward[t];
            uint256 pay = due < left ? due : left;
            if (pay > 0) {
                left -= pay;
                paid += pay;
                Account storage a = _accounts[p];
                a.owed += uint128(pay);
                a.rewarded += uint128(pay);
            }
        }
        if (paid > 0) {
            pool = uint128(left);
            owedTotal += uint128(paid);
        }
        emit TiersSubmitted(epoch, n, signed, total, paid);
    }

    // ---------------------------------------------------------------- internals

    /// @dev Adds `add` checks of `p` by the caller in `epoch` (current or previous), capped.
    function _count(uint64 epoch, address p, uint256 add) internal {
        CheckCounter storage k = _checks[msg.sender][p];
        uint64 tag = epoch + 1;
        bool odd = epoch & 1 == 1;
        uint256 total = add;
        if (odd) {
            if (k.tag1 == tag) total += k.count1;
        } else if (k.tag0 == tag) {
            total += k.count0;
        }
        if (total > maxChecksPerEpoch) revert TooManyChecks(epoch, p, total, maxChecksPerEpoch);
        if (!market.canBid(p)) revert NotAProvider(p);
        if (odd) {
            (k.tag1, k.count1) = (tag, uint16(total));
        } else {
            (k.tag0, k.count0) = (tag, uint16(total));
        }
    }

    function _pay(Account storage a, uint256 due) internal returns (uint256 paid) {
        uint256 left = pool;
        paid = due < left ? due : left;
        if (paid > 0) {
            pool = uint128(left - paid);
            owedTotal += uint128(paid);
            a.owed += uint128(paid);
            a.rewarded += uint128(paid);
        }
    }

    function _marketVerdict(Verdict calldata v) internal pure returns (SpheronMarket.Verdict memory) {
        return SpheronMarket.Verdict({
            provider: v.provider, session: v.session, model: v.model, amount: v.amount, issuedAt: v.issuedAt
        });
    }

    function _accuracy(uint64 passes, uint32 confirmed, uint32 overturned) internal pure returns (uint16) {
        uint256 good = uint256(passes) + confirmed;
        uint256 all = good + overturned;
        return all == 0 ? 0 : uint16(good * 10_000 / all);
    }

    /// @dev An open case inside its window whose assignee is the caller.
    function _open(uint64 caseId) internal returns (Case storage c) {
        c = _cases[caseId];
        if (c.state == CaseState.None) revert UnknownCase(caseId);
        if (c.state != CaseState.Open) revert CaseClosed(caseId, c.state);
        uint256 deadline = uint256(c.openedAt) + recheckWindowSecs;
        if (block.timestamp > deadline) revert RecheckWindow(caseId, deadline);
        address assignee = _assignee(caseId, c);
        if (msg.sender != assignee) revert NotAssignee(caseId, assignee);
    }

    /// @dev The recorded assignee, or draws and records it.
    function _assignee(uint64 caseId, Case storage c) internal returns (address a) {
        if (c.state == CaseState.None) revert UnknownCase(caseId);
        a = c.assignee;
        if (a != address(0)) return a;
        a = _draw(caseId, c);
        if (a == address(0)) revert NotAssignedYet(caseId);
        c.assignee = a;
        emit CaseAssigned(caseId, a);
    }

    /// @dev Draws the assignee from blockhash(openedBlock + 1) (or, past 256 blocks, the most
    /// recent block hash) and the case id over the verifiers with stake just before the case
    /// opened, the accuser excluded; zero before that block exists.
    function _draw(uint64 caseId, Case memory c) internal view returns (address) {
        uint256 target = uint256(c.openedBlock) + 1;
        if (block.number <= target) return address(0);
        bytes32 h = blockhash(target);
        if (h == bytes32(0)) h = blockhash(block.number - 1);
        (address[] memory list, uint256 count) = _candidates(c.accuser, uint48(c.openedAt));
        if (count == 0) return address(0);
        return list[uint256(keccak256(abi.encode(h, caseId))) % count];
    }

    /// @dev Verifiers other than `accuser` with weight at `openedAt - 1` (so parties joining
    /// or leaving in the opening block cannot steer the draw), compacted in registration order.
    function _candidates(address accuser, uint48 openedAt) internal view returns (address[] memory list, uint256 count) {
        list = operators.partiesOf(SpheronOperators.Kind.Verifier);
        uint48 at = openedAt - 1;
        for (uint256 i = 0; i < list.length; ++i) {
            address v = list[i];
            if (v != accuser && operators.weightAt(v, at) > 0) list[count++] = v;
        }
    }
}
