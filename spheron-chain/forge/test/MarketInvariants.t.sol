// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InvariantBase, FuzzSelector} from "./Vm.sol";
import {Handler} from "./Handler.sol";
import {PlainToken, FeeOnTransferToken, HookToken} from "./Tokens.sol";
import {SpheronMarket} from "spheron/SpheronMarket.sol";
import {SpheronOperators} from "spheron/SpheronOperators.sol";

/// @notice Deploys the real contracts and a Handler; forge then calls random sequences of the
/// handler's operations and checks `handler.check()` after every call.
abstract contract MarketInvariantSetup is InvariantBase {
    Handler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        PlainToken sphn = new PlainToken("Spheron", "SPHN", 18);
        PlainToken usdc = new PlainToken("USD stable", "USDS", 6);
        FeeOnTransferToken fot = new FeeOnTransferToken();
        HookToken hook = new HookToken();
        PlainToken junk = new PlainToken("Not allowed", "JUNK", 6);
        address admin = vm.addr(0xAD);
        SpheronOperators ops = new SpheronOperators(address(sphn), 7 days, 100e18, 1_000, 1_000);
        SpheronMarket market = new SpheronMarket(
            SpheronMarket.Params({
                admin: admin,
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
        handler = new Handler([address(sphn), address(usdc), address(fot), address(hook)], address(junk), address(market), address(ops));
        handler.init(admin);
        handler.check();

        _targetContracts.push(address(handler));
        bytes4[] memory s = new bytes4[](26);
        s[0] = Handler.deposit.selector;
        s[1] = Handler.withdraw.selector;
        s[2] = Handler.transferBalance.selector;
        s[3] = Handler.withdrawFees.selector;
        s[4] = Handler.createOrder.selector;
        s[5] = Handler.lockFunds.selector;
        s[6] = Handler.openLease.selector;
        s[7] = Handler.cancelOrder.selector;
        s[8] = Handler.expireOrder.selector;
        s[9] = Handler.placeBid.selector;
        s[10] = Handler.withdrawBid.selector;
        s[11] = Handler.submitMatch.selector;
        s[12] = Handler.confirmStart.selector;
        s[13] = Handler.cancelUnstarted.selector;
        s[14] = Handler.extendLease.selector;
        s[15] = Handler.closeLease.selector;
        s[16] = Handler.settleBatch.selector;
        s[17] = Handler.stake.selector;
        s[18] = Handler.requestUnstake.selector;
        s[19] = Handler.withdrawUnstaked.selector;
        s[20] = Handler.slashWithVerdict.selector;
        s[21] = Handler.reportEquivocation.selector;
        s[22] = Handler.partyRegister.selector;
        s[23] = Handler.partyRequestExit.selector;
        s[24] = Handler.partyWithdrawExit.selector;
        s[25] = Handler.warp.selector;
        // forge picks a selector uniformly from the list, so the lifecycle weighs more: matchFlow
        // (order, bids, quorum match, usually start) 6 times, the steps after a match twice
        bytes4[] memory extra = new bytes4[](13);
        extra[0] = Handler.pauseToggle.selector;
        extra[1] = Handler.attack.selector;
        extra[2] = Handler.submitMatch.selector;
        extra[3] = Handler.confirmStart.selector;
        extra[4] = Handler.extendLease.selector;
        extra[5] = Handler.closeLease.selector;
        extra[6] = Handler.cancelUnstarted.selector;
        for (uint256 i = 7; i < 13; ++i) extra[i] = Handler.matchFlow.selector;
        bytes4[] memory all = new bytes4[](s.length + extra.length);
        for (uint256 i = 0; i < s.length; ++i) all[i] = s[i];
        for (uint256 i = 0; i < extra.length; ++i) all[s.length + i] = extra[i];
        _targetSelectors.push(FuzzSelector({addr: address(handler), selectors: all}));
    }

    /// @dev Which campaign this is (names its coverage file).
    function _tag() internal pure virtual returns (string memory);

    /// @notice After each sequence: one line of what succeeded in it, appended to
    /// cache/coverage/<campaign>.txt (scripts/invariants.sh sums the lines and fails unless
    /// the whole run reached a quorum match, a start, an extension and a close).
    function afterInvariant() public {
        vm.writeLine(string.concat("cache/coverage/", _tag(), ".txt"), handler.coverageLine());
    }
}

/// @notice Two identical campaigns (forge runs test functions on parallel threads, so the
/// two halves use both cores); each checks every invariant after every call.
contract MarketInvariantsA is MarketInvariantSetup {
    function _tag() internal pure override returns (string memory) {
        return "A";
    }

    function invariant_ledgerModelAndRoles() public view {
        handler.check();
    }
}

contract MarketInvariantsB is MarketInvariantSetup {
    function _tag() internal pure override returns (string memory) {
        return "B";
    }

    function invariant_ledgerModelAndRoles() public view {
        handler.check();
    }
}
