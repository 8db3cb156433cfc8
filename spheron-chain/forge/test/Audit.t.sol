// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PlainToken} from "./Tokens.sol";
import {SpheronMarket} from "spheron/SpheronMarket.sol";
import {SpheronOperators} from "spheron/SpheronOperators.sol";
import {SpheronAudit} from "spheron/SpheronAudit.sol";

/// @notice The forge cheatcodes these tests use.
interface AuditVm {
    function warp(uint256 newTimestamp) external;
    function roll(uint256 newHeight) external;
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function expectRevert(bytes calldata revertData) external;
    function expectRevert(bytes4 revertData) external;
    function expectRevert() external;
}

/// @notice SpheronAudit on the real market and operators contracts: posting limits and the
/// epoch window, rewards against the pool (balance == pool + owed after every test), cases
/// confirmed and overturned, the draw of the re-checker, expiry, feedback, quorum tiers.
contract AuditTest {
    AuditVm internal constant vm = AuditVm(address(uint160(uint256(keccak256("hevm cheat code")))));
    bool public IS_TEST = true;

    uint32 internal constant EPOCH = 3600;
    uint32 internal constant WINDOW = 600;
    uint128 internal constant REWARD = 1e18;
    uint128 internal constant VSTAKE = 200e18;
    address internal constant BURN = 0x000000000000000000000000000000000000dEaD;

    PlainToken internal sphn;
    SpheronOperators internal ops;
    SpheronMarket internal market;
    SpheronAudit internal audit;
    uint256[3] internal vKeys;
    address[3] internal verifiers;
    uint256[2] internal oKeys;
    address[2] internal operators;
    address[4] internal providers;
    address internal tenant;
    address internal stranger;

    function setUp() public {
        vm.warp(1_700_000_000);
        vm.roll(1_000);
        sphn = new PlainToken("Spheron", "SPHN", 18);
        ops = new SpheronOperators(address(sphn), 7 days, 100e18, 1_000, 1_000);
        market = new SpheronMarket(
            SpheronMarket.Params({
                admin: address(this),
                adminDelay: 1 days,
                sphn: address(sphn),
                operators: address(ops),
                unbondingPeriod: 7 days,
                minStake: 10e18,
                slashReporterBps: 1_000,
                maxSlashBps: 5_000,
                matchWindowSecs: 1 hours,
                startWindowSecs: 2 hours
            })
        );
        audit = new SpheronAudit(address(market), address(ops), address(sphn), _config(), address(this));
        market.grantRole(market.TIER_ROLE(), address(audit));
        ops.setAuditor(address(audit));
        for (uint256 i = 0; i < 3; ++i) {
            vKeys[i] = 0xF00 + i;
            verifiers[i] = vm.addr(vKeys[i]);
            _party(verifiers[i], SpheronOperators.Kind.Verifier, VSTAKE);
        }
        for (uint256 i = 0; i < 2; ++i) {
            oKeys[i] = 0x0B0 + i;
            operators[i] = vm.addr(oKeys[i]);
            _party(operators[i], SpheronOperators.Kind.Operator, 500e18);
        }
        for (uint256 i = 0; i < 4; ++i) {
            providers[i] = vm.addr(0x9B0 + i);
            _provider(providers[i]);
        }
        tenant = vm.addr(0x7E7);
        stranger = vm.addr(0x5757);
        sphn.mint(address(this), 1_000e18);
        sphn.approve(address(audit), type(uint256).max);
        audit.fundRewards(50e18);
        // Stakes must predate cases: the draw counts verifiers staked just before one opens.
        vm.warp(1_700_000_001);
        _roll(1);
    }

    /// @dev Block height kept in storage: with viaIR, two reads of block.number in one
    /// function may be merged, so a second relative roll would not move.
    uint256 internal _height = 1_000;

    function _roll(uint256 n) internal {
        _height += n;
        vm.roll(_height);
    }

    function _config() internal pure returns (SpheronAudit.Config memory c) {
        c.epochSecs = EPOCH;
        c.maxChecksPerEpoch = 6;
        c.rewardPerCheck = REWARD;
        c.overturnSlashBps = 1_000;
        c.recheckWindowSecs = WINDOW;
        c.tierReward = [uint128(0), 1e18, 2e18, 4e18, 6e18, 8e18, 12e18, 16e18];
    }

    function _party(address who, SpheronOperators.Kind kind, uint128 amount) internal {
        sphn.mint(who, amount);
        vm.startPrank(who);
        sphn.approve(address(ops), amount);
        ops.register(kind, "http://party", amount);
        vm.stopPrank();
    }

    function _provider(address who) internal {
        sphn.mint(who, 100e18);
        vm.startPrank(who);
        sphn.approve(address(market), type(uint256).max);
        market.deposit(address(sphn), 100e18);
        market.register("https://p", "eu", hex"01", bytes32(0), "{}");
        market.stake(50e18);
        vm.stopPrank();
    }

    // ------------------------------------------------------------ helpers

    function _eq(uint256 a, uint256 b, string memory what) internal pure {
        require(a == b, string.concat(what, ": ", _u(a), " != ", _u(b)));
    }

    function _u(uint256 v) internal pure returns (string memory s) {
        if (v == 0) return "0";
        while (v > 0) {
            s = string.concat(string(abi.encodePacked(bytes1(uint8(48 + v % 10)))), s);
            v /= 10;
        }
    }

    function _balanced() internal view {
        _eq(sphn.balanceOf(address(audit)), uint256(audit.pool()) + audit.owedTotal(), "balance == pool + owed");
    }

    function _post(address v, uint64 e, address p, uint16 passes, uint16 fails) internal {
        address[] memory ps = new address[](1);
        uint16[] memory a = new uint16[](1);
        uint16[] memory b = new uint16[](1);
        (ps[0], a[0], b[0]) = (p, passes, fails);
        vm.prank(v);
        audit.postChecks(e, ps, a, b);
    }

    function _verdict(address p, uint256 session, uint128 amount) internal view returns (SpheronAudit.Verdict memory) {
        return SpheronAudit.Verdict({
            market: address(market),
            provider: p,
            session: bytes32(session),
            model: "H100",
            amount: amount,
            issuedAt: uint64(block.timestamp)
        });
    }

    function _sig(uint256 key, SpheronAudit.Verdict memory v) internal view returns (bytes memory) {
        bytes32 d = market.verdictDigest(
            SpheronMarket.Verdict({
                provider: v.provider, session: v.session, model: v.model, amount: v.amount, issuedAt: v.issuedAt
            })
        );
        (uint8 pv, bytes32 r, bytes32 s) = vm.sign(key, d);
        return abi.encodePacked(r, s, pv);
    }

    function _key(address a) internal view returns (uint256) {
        for (uint256 i = 0; i < 3; ++i) {
            if (verifiers[i] == a) return vKeys[i];
        }
        revert("not a verifier");
    }

    /// Opens a case by verifier `i`, mines the blocks the draw needs; returns id and assignee.
    function _open(uint256 i, SpheronAudit.Verdict memory v) internal returns (uint64 id, address assignee) {
        bytes memory sig = _sig(vKeys[i], v);
        vm.prank(verifiers[i]);
        id = audit.openCase(v, sig);
        _roll(2);
        assignee = audit.assigneeOf(id);
        require(assignee != address(0), "drawn");
        require(assignee != verifiers[i], "the accuser is never the assignee");
    }

    function _tierSigs(uint64 e, address[] memory ps, bytes memory tiers, uint256 n)
        internal
        view
        returns (address[] memory signers, bytes[] memory sigs)
    {
        bytes32 d = audit.tiersDigest(e, ps, tiers);
        signers = new address[](n);
        sigs = new bytes[](n);
        uint256[2] memory keys = oKeys;
        if (n == 2 && operators[0] > operators[1]) (keys[0], keys[1]) = (keys[1], keys[0]);
        for (uint256 i = 0; i < n; ++i) {
            (uint8 pv, bytes32 r, bytes32 s) = vm.sign(keys[i], d);
            signers[i] = vm.addr(keys[i]);
            sigs[i] = abi.encodePacked(r, s, pv);
        }
    }

    // ------------------------------------------------------------ checks and rewards

    function test_postingLimitsAndUptime() public {
        uint64 e = audit.currentEpoch();
        _post(verifiers[0], e, providers[0], 3, 1);
        (uint32 p, uint32 f) = audit.uptimeOf(e, providers[0]);
        _eq(p, 3, "passes");
        _eq(f, 1, "fails");
        _eq(audit.rewardsOf(verifiers[0]), 3 * REWARD, "paid per pass");
        // 4 + 3 > 6: refused, typed; up to 6 is fine; the cap is per verifier.
        address[] memory ps = new address[](1);
        uint16[] memory a = new uint16[](1);
        uint16[] memory b = new uint16[](1);
        (ps[0], a[0], b[0]) = (providers[0], 3, 0);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.TooManyChecks.selector, e, providers[0], 7, 6));
        vm.prank(verifiers[0]);
        audit.postChecks(e, ps, a, b);
        _post(verifiers[0], e, providers[0], 1, 1);
        _post(verifiers[1], e, providers[0], 6, 0);
        (p, f) = audit.uptimeOf(e, providers[0]);
        _eq(p, 10, "passes over verifiers");
        _eq(f, 2, "fails over verifiers");
        _eq(audit.checksBy(e, verifiers[0], providers[0]), 6, "counted");
        // A new epoch starts a new count.
        vm.warp(audit.epochEnd(e));
        _post(verifiers[0], e + 1, providers[0], 6, 0);
        _eq(audit.checksBy(e + 1, verifiers[0], providers[0]), 6, "new epoch");
        _eq(audit.checksBy(e, verifiers[0], providers[0]), 6, "previous epoch kept");
        SpheronAudit.Stats memory s = audit.statsOf(verifiers[0]);
        _eq(s.passes, 10, "stats.passes");
        _eq(s.fails, 2, "stats.fails");
        _balanced();
    }

    function test_epochWindow() public {
        uint64 e = audit.currentEpoch();
        _eq(audit.epochEnd(e) - audit.epochStart(e), EPOCH, "epoch length");
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.EpochNotOpen.selector, e + 1, e));
        this.postAs(verifiers[0], e + 1);
        vm.warp(audit.epochEnd(e));
        _post(verifiers[0], e, providers[0], 1, 0); // the previous epoch
        vm.warp(audit.epochEnd(e + 1));
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.EpochNotOpen.selector, e, e + 2));
        this.postAs(verifiers[0], e);
    }

    /// @dev External so expectRevert sees one call.
    function postAs(address v, uint64 e) external {
        _post(v, e, providers[0], 1, 0);
    }

    function test_nonVerifierCannotPost() public {
        uint64 e = audit.currentEpoch();
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotVerifier.selector, stranger));
        this.postAs(stranger, e);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotVerifier.selector, operators[0]));
        this.postAs(operators[0], e);
        // Not a provider the market lets bid: no reward for checking it.
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotAProvider.selector, stranger));
        vm.prank(verifiers[0]);
        address[] memory ps = new address[](1);
        ps[0] = stranger;
        audit.postChecks(e, ps, new uint16[](1), new uint16[](1));
    }

    function test_rewardsNeverExceedThePool() public {
        uint64 e = audit.currentEpoch();
        // 3 verifiers x 4 providers x 6 passes = 72 due, 50 in the pool.
        uint256 sum;
        for (uint256 i = 0; i < 3; ++i) {
            for (uint256 j = 0; j < 4; ++j) {
                _post(verifiers[i], e, providers[j], 6, 0);
                _balanced();
            }
        }
        for (uint256 i = 0; i < 3; ++i) {
            sum += audit.rewardsOf(verifiers[i]);
        }
        _eq(sum, 50e18, "paid all of the pool, no more");
        _eq(audit.pool(), 0, "pool empty");
        _eq(audit.rewardsOf(verifiers[2]), 2e18, "the last got what was left");
        for (uint256 i = 0; i < 3; ++i) {
            uint256 owed = audit.rewardsOf(verifiers[i]);
            uint256 before = sphn.balanceOf(verifiers[i]);
            vm.prank(verifiers[i]);
            audit.claimRewards();
            _eq(sphn.balanceOf(verifiers[i]) - before, owed, "claimed");
            _balanced();
        }
        _eq(sphn.balanceOf(address(audit)), 0, "all paid out");
        vm.expectRevert(SpheronAudit.Zero.selector);
        vm.prank(verifiers[0]);
        audit.claimRewards();
        // Refilled, passes are paid again.
        audit.fundRewards(5e18);
        vm.warp(audit.epochEnd(e));
        _post(verifiers[0], e + 1, providers[0], 2, 0);
        _eq(audit.rewardsOf(verifiers[0]), 2e18, "paid from the refill");
        _balanced();
    }

    // ------------------------------------------------------------ cases

    function test_confirmSlashesTheProviderAndPaysBoth() public {
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 5e18);
        (uint64 id, address assignee) = _open(0, v);
        // Only the assignee resolves.
        address other = verifiers[1] == assignee ? verifiers[2] : verifiers[1];
        bytes memory accuserSig = _sig(vKeys[0], v);
        bytes memory otherSig = _sig(_key(other), v);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotAssignee.selector, id, assignee));
        vm.prank(other);
        audit.confirmCase(id, v, accuserSig, otherSig);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotAssignee.selector, id, assignee));
        vm.prank(verifiers[0]);
        audit.overturnCase(id);
        // The verdict given must be the case's.
        SpheronAudit.Verdict memory w = _verdict(providers[0], 2, 5e18);
        bytes memory wSig = _sig(_key(assignee), w);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.VerdictMismatch.selector, id));
        vm.prank(assignee);
        audit.confirmCase(id, w, accuserSig, wSig);

        uint128 before = market.stakeOf(providers[0]).staked;
        bytes memory mine = _sig(_key(assignee), v);
        vm.prank(assignee);
        audit.confirmCase(id, v, accuserSig, mine);
        _eq(before - market.stakeOf(providers[0]).staked, 5e18, "provider slashed");
        // The market's 10% reporter share, split.
        _eq(audit.rewardsOf(verifiers[0]), 0.25e18, "accuser's half");
        _eq(audit.rewardsOf(assignee), 0.25e18, "re-checker's half");
        _eq(market.accountOf(address(sphn), address(audit)).available, 0, "withdrawn from the market");
        _eq(uint8(audit.caseOf(id).state), uint8(SpheronAudit.CaseState.Confirmed), "state");
        _eq(audit.statsOf(verifiers[0]).confirmed, 1, "accuser.confirmed");
        _eq(audit.statsOf(assignee).rechecks, 1, "rechecker.rechecks");
        _eq(audit.accuracyBps(verifiers[0]), 10_000, "a confirmed accuser is accurate");
        vm.expectRevert(
            abi.encodeWithSelector(SpheronAudit.CaseClosed.selector, id, SpheronAudit.CaseState.Confirmed)
        );
        vm.prank(assignee);
        audit.overturnCase(id);
        _balanced();
    }

    function test_overturnSlashesTheAccuserAndRanksItDown() public {
        uint64 e = audit.currentEpoch();
        for (uint256 i = 0; i < 3; ++i) {
            _post(verifiers[i], e, providers[0], uint16(1 + i), 0);
        }
        (address[] memory r,) = audit.ranking();
        require(r[0] == verifiers[2] && r[1] == verifiers[1] && r[2] == verifiers[0], "ties: more checks first");
        // verifiers[2] (3 passes) accuses falsely and is overturned.
        SpheronAudit.Verdict memory v = _verdict(providers[1], 7, 5e18);
        (uint64 id, address assignee) = _open(2, v);
        uint256 burned = sphn.balanceOf(BURN);
        uint256 weight = ops.weightAt(verifiers[2], uint48(block.timestamp));
        vm.prank(assignee);
        uint256 slashed = audit.overturnCase(id);
        _eq(slashed, VSTAKE / 10, "overturnSlashBps of the stake");
        _eq(sphn.balanceOf(BURN) - burned, slashed, "burned");
        _eq(ops.partyOf(verifiers[2]).staked, VSTAKE - slashed, "stake");
        _eq(weight - ops.weightAt(verifiers[2], uint48(block.timestamp)), slashed, "weight checkpoint");
        _eq(market.stakeOf(providers[1]).staked, 50e18, "the provider untouched");
        _eq(uint8(audit.caseOf(id).state), uint8(SpheronAudit.CaseState.Overturned), "state");
        _eq(audit.statsOf(verifiers[2]).overturned, 1, "accuser.overturned");
        _eq(audit.statsOf(assignee).rechecks, 1, "rechecker.rechecks");
        _eq(audit.accuracyBps(verifiers[2]), 7_500, "3 / (3 + 1)");
        uint16[] memory acc;
        (r, acc) = audit.ranking();
        require(r[2] == verifiers[2], "the overturned accuser ranks last");
        _eq(acc[2], 7_500, "its accuracy");
        _eq(acc[0], 10_000, "the best");
        _balanced();
    }

    function test_drawWaitsForTheNextBlockAndExcludesTheAccuser() public {
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 1e18);
        bytes memory sig = _sig(vKeys[0], v);
        vm.prank(verifiers[0]);
        uint64 id = audit.openCase(v, sig);
        _eq(uint160(audit.assigneeOf(id)), 0, "not drawn in the opening block");
        _roll(1);
        _eq(uint160(audit.assigneeOf(id)), 0, "blockhash(opened + 1) is not readable in that block");
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotAssignedYet.selector, id));
        vm.prank(verifiers[1]);
        audit.overturnCase(id);
        _roll(1);
        address a = audit.assigneeOf(id);
        require(a == verifiers[1] || a == verifiers[2], "drawn among the others");
        // Over many cases the accuser is never drawn, and both others are.
        uint256 seen1;
        uint256 seen2;
        for (uint256 s = 10; s < 40; ++s) {
            (, address x) = _open(0, _verdict(providers[s % 4], s, 1e18));
            if (x == verifiers[1]) seen1++;
            if (x == verifiers[2]) seen2++;
        }
        require(seen1 > 0 && seen2 > 0, "both other verifiers are drawn");
        _eq(seen1 + seen2, 30, "only them");
        // Recorded on first use; a verifier joining later does not change it.
        address rec = audit.recordAssignee(id);
        _eq(uint160(rec), uint160(a), "recorded as drawn");
        _party(vm.addr(0xF10), SpheronOperators.Kind.Verifier, VSTAKE);
        _eq(uint160(audit.assigneeOf(id)), uint160(a), "fixed");
    }

    function test_doubleOpenAndBadSignaturesRefused() public {
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 1e18);
        (uint64 id,) = _open(0, v);
        bytes memory sig = _sig(vKeys[0], v);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.CaseExists.selector, id));
        vm.prank(verifiers[0]);
        audit.openCase(v, sig);
        // Another verifier cannot open it either (one case per verdict digest).
        bytes memory sig1 = _sig(vKeys[1], v);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.CaseExists.selector, id));
        vm.prank(verifiers[1]);
        audit.openCase(v, sig1);
        // Someone else's signature, a non-verifier, another market, a stale verdict.
        SpheronAudit.Verdict memory w = _verdict(providers[0], 2, 1e18);
        bytes memory wrong = _sig(vKeys[1], w);
        vm.expectRevert(SpheronAudit.NotAccuserSignature.selector);
        vm.prank(verifiers[0]);
        audit.openCase(w, wrong);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotVerifier.selector, stranger));
        vm.prank(stranger);
        audit.openCase(w, sig);
        w.market = address(this);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.BadCaseVerdict.selector, "another market"));
        vm.prank(verifiers[0]);
        audit.openCase(w, sig);
        w = _verdict(providers[0], 3, 1e18);
        bytes memory stale = _sig(vKeys[0], w);
        uint256 later = uint256(w.issuedAt) + WINDOW + 1;
        vm.warp(later);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.StaleVerdict.selector, w.issuedAt, later));
        vm.prank(verifiers[0]);
        audit.openCase(w, stale);
    }

    function test_expiry() public {
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 1e18);
        (uint64 id, address assignee) = _open(0, v);
        uint256 deadline = block.timestamp + WINDOW;
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.RecheckWindow.selector, id, deadline));
        audit.expireCase(id);
        vm.warp(deadline + 1);
        bytes memory a = _sig(vKeys[0], v);
        bytes memory b = _sig(_key(assignee), v);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.RecheckWindow.selector, id, deadline));
        vm.prank(assignee);
        audit.confirmCase(id, v, a, b);
        vm.prank(stranger);
        audit.expireCase(id);
        _eq(uint8(audit.caseOf(id).state), uint8(SpheronAudit.CaseState.Expired), "expired");
        _eq(ops.partyOf(verifiers[0]).staked, VSTAKE, "nobody penalised");
        _eq(market.stakeOf(providers[0]).staked, 50e18, "nobody penalised");
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.CaseClosed.selector, id, SpheronAudit.CaseState.Expired));
        audit.expireCase(id);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.UnknownCase.selector, 99));
        audit.expireCase(99);
    }

    function test_anExitedAssigneeCannotOverturn() public {
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 1e18);
        (uint64 id, address assignee) = _open(0, v);
        vm.prank(assignee);
        ops.requestExit(VSTAKE);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotVerifier.selector, assignee));
        vm.prank(assignee);
        audit.overturnCase(id);
        _eq(ops.partyOf(verifiers[0]).staked, VSTAKE, "the accuser keeps its stake");
    }

    function test_noOtherVerifierNoCase() public {
        vm.prank(verifiers[1]);
        ops.requestExit(VSTAKE);
        vm.prank(verifiers[2]);
        ops.requestExit(VSTAKE);
        vm.warp(block.timestamp + 1);
        SpheronAudit.Verdict memory v = _verdict(providers[0], 1, 1e18);
        bytes memory sig = _sig(vKeys[0], v);
        vm.expectRevert(SpheronAudit.NoRechecker.selector);
        vm.prank(verifiers[0]);
        audit.openCase(v, sig);
    }

    function test_onlyTheAuditorSlashesVerifiers() public {
        vm.expectRevert(abi.encodeWithSelector(SpheronOperators.NotAuditor.selector, stranger));
        vm.prank(stranger);
        ops.slashVerifier(verifiers[0], 1_000, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(SpheronOperators.AuditorFixed.selector, address(audit)));
        ops.setAuditor(stranger);
        vm.expectRevert(abi.encodeWithSelector(SpheronOperators.NotDeployer.selector, stranger));
        vm.prank(stranger);
        ops.setAuditor(stranger);
        // The auditor slashes verifiers only.
        vm.expectRevert(abi.encodeWithSelector(SpheronOperators.NotRegistered.selector, operators[0]));
        vm.prank(address(audit));
        ops.slashVerifier(operators[0], 1_000, bytes32(0));
    }

    // ------------------------------------------------------------ feedback and tiers

    function _sortedProviders() internal view returns (address[] memory ps) {
        ps = new address[](4);
        for (uint256 i = 0; i < 4; ++i) {
            ps[i] = providers[i];
        }
        for (uint256 i = 1; i < 4; ++i) {
            for (uint256 j = i; j > 0 && ps[j - 1] > ps[j]; --j) {
                (ps[j - 1], ps[j]) = (ps[j], ps[j - 1]);
            }
        }
    }

    function test_rateOnlyByTheTenantOnce() public {
        sphn.mint(tenant, 100e18);
        vm.startPrank(tenant);
        sphn.approve(address(market), type(uint256).max);
        market.deposit(address(sphn), 100e18);
        uint64 id = market.lockFunds(address(sphn), 10e18);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.LeaseNotStarted.selector, id));
        vm.prank(tenant);
        audit.rate(id, 5);
        vm.prank(tenant);
        market.openLease(id, providers[0], 1e18, 1);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotLeaseTenant.selector, id, stranger));
        vm.prank(stranger);
        audit.rate(id, 5);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.BadScore.selector, 0));
        vm.prank(tenant);
        audit.rate(id, 0);
        vm.prank(tenant);
        audit.rate(id, 4);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.AlreadyRated.selector, id));
        vm.prank(tenant);
        audit.rate(id, 5);
        (uint32 n, uint32 sum) = audit.feedbackOf(audit.currentEpoch(), providers[0]);
        _eq(n, 1, "count");
        _eq(sum, 4, "sum");
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NotLeaseTenant.selector, 77, tenant));
        vm.prank(tenant);
        audit.rate(77, 5);
    }

    function test_submitTiersNeedsQuorumOnceClosedEpoch() public {
        uint64 e = audit.currentEpoch();
        address[] memory ps = _sortedProviders();
        bytes memory tiers = hex"07030005";
        (address[] memory signers, bytes[] memory sigs) = _tierSigs(e, ps, tiers, 2);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.EpochNotClosed.selector, e, e));
        audit.submitTiers(e, ps, tiers, signers, sigs);
        vm.warp(audit.epochEnd(e));
        // One of two equal operators: half the stake, no quorum.
        (address[] memory one, bytes[] memory oneSig) = _tierSigs(e, ps, tiers, 1);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.NoQuorum.selector, 500e18, 1_000e18));
        audit.submitTiers(e, ps, tiers, one, oneSig);
        // Signatures over other tiers do not verify.
        vm.expectRevert();
        audit.submitTiers(e, ps, hex"07030006", signers, sigs);
        audit.submitTiers(e, ps, tiers, signers, sigs);
        require(audit.tiersSubmitted(e), "submitted");
        _eq(market.providerInfo(ps[0]).tier, 7, "tier written on the market");
        _eq(market.providerInfo(ps[2]).tier, 0, "tier 0");
        _eq(audit.rewardsOf(ps[0]), 16e18, "tier 7 reward");
        _eq(audit.rewardsOf(ps[1]), 4e18, "tier 3 reward");
        _eq(audit.rewardsOf(ps[3]), 8e18, "tier 5 reward");
        _eq(audit.pool(), 50e18 - 28e18, "paid from the pool");
        _balanced();
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.TiersAlreadySubmitted.selector, e));
        audit.submitTiers(e, ps, tiers, signers, sigs);
        // A tier above 7 is refused even with a quorum, and so is a provider listed twice.
        vm.warp(audit.epochEnd(e + 1));
        ps[2] = ps[1];
        (signers, sigs) = _tierSigs(e + 1, ps, tiers, 2);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.ProvidersNotSorted.selector, 2));
        audit.submitTiers(e + 1, ps, tiers, signers, sigs);
        ps = _sortedProviders();
        (signers, sigs) = _tierSigs(e + 1, ps, hex"07030008", 2);
        vm.expectRevert(abi.encodeWithSelector(SpheronAudit.TierOutOfRange.selector, 3, 8));
        audit.submitTiers(e + 1, ps, hex"07030008", signers, sigs);
    }
}
