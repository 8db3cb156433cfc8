// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MarketInvariantSetup} from "./MarketInvariants.t.sol";

/// @notice One scripted sequence through the handler: order, bid, quorum match, start,
/// close; proves the handler's lifecycle paths succeed (the fuzzer must be able to reach them).
contract HandlerLifecycle is MarketInvariantSetup {
    function _tag() internal pure override returns (string memory) {
        return "lifecycle";
    }

    /// @notice matchFlow alone: order, bids, quorum match, start and extension in one call,
    /// then a close by the tenant of the newest lease.
    function test_matchFlowReachesStartAndExtension() public {
        uint256 sigSeed = 2 << 64; // mode 0 (every active operator), then start and extend
        handler.matchFlow(1, 1e6, 2, sigSeed | (uint256(3600) << 72));
        require(handler.okCount("createOrder") == 1, string.concat("createOrder: ", handler.lastBad()));
        require(handler.okCount("placeBid") >= 1, string.concat("placeBid: ", handler.lastBad()));
        require(handler.matches() == 1, string.concat("submitMatch: ", handler.lastBad()));
        require(handler.okCount("confirmStart") == 1, string.concat("confirmStart: ", handler.lastBad()));
        require(handler.okCount("extendLease") == 1, string.concat("extendLease: ", handler.lastBad()));
        handler.closeLease(1, 0); // idSeed 1: the newest lease; actorSeed 0: its tenant
        require(handler.closes() == 1, string.concat("closeLease: ", handler.lastBad()));
        require(handler.okCount("closed.extended") == 1, "the extended lease's close was not counted");
        handler.check();
    }

    function test_lifecycleThroughTheHandler() public {
        uint256 shape = 1 + (1 << 8) + (5 << 40); // 1 GPU, 1 hour, 5-minute bid window
        handler.createOrder(0, 0, 1e6, shape);
        require(handler.okCount("createOrder") == 1, string.concat("createOrder: ", handler.lastBad()));
        handler.placeBid(0, 1, 5e5, 0);
        require(handler.okCount("placeBid") == 1, string.concat("placeBid: ", handler.lastBad()));
        handler.warp(400);
        handler.submitMatch(1, 0, 0);
        require(handler.matches() == 1, string.concat("submitMatch: ", handler.lastBad()));
        handler.confirmStart(1, 1);
        require(handler.okCount("confirmStart") == 1, string.concat("confirmStart: ", handler.lastBad()));
        handler.warp(3 + 8 * 70); // k = 3: dt = seed % 2 hours
        handler.closeLease(1, 0);
        require(handler.closes() == 1, string.concat("closeLease: ", handler.lastBad()));
        handler.check();
    }
}
