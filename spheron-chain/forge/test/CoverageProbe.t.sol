// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
import {MarketInvariantSetup} from "./MarketInvariants.t.sol";
contract CoverageProbeMatch is MarketInvariantSetup {
    function invariant_probe() public view {
        require(!(handler.matches() > 0 && handler.okCount("confirmStart") > 0 && handler.closes() > 0), "probe: match+start+close reached");
    }
}
contract CoverageProbeSlash is MarketInvariantSetup {
    function invariant_probe() public view {
        require(!(handler.slashes() > 0 && handler.okCount("reportEquivocation") > 0 && handler.okCount("extendLease") > 0), "probe: slash+equivocation+extend reached");
    }
}
contract CoverageProbeHook is MarketInvariantSetup {
    function invariant_probe() public view {
        require(!(handler.reentries() > 0 && handler.okCount("withdrawUnstaked") > 0 && handler.okCount("partyWithdrawExit") > 0 && handler.okCount("openLease") > 0), "probe: reentry+unstake+exit+openLease reached");
    }
}
