//! Whether a layer runs with its rank-1 stages separated: both layers
//! planned and priced as fusion is ([`separation_cost`]).

use super::cost::group_cycles;
use super::{plan_layer, Host, Options};
use convjit_ir::{Layer, Separation};

/// The cost model's estimates (cycles per image) for a layer run whole
/// and with its rank-1 stages separated (`convjit_ir::separate`), each as
/// planned: separating saves MACs, but adds a stage whose code may be
/// narrower (an AVX-512 layer's 1xK stage on 2-7 channels is AVX2 code).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeparationCost {
    /// The layer as written.
    pub whole: f64,
    /// The layer with its stages separated.
    pub separated: f64,
    /// An approximation the user asked for (`Separation::Rank`): it runs
    /// whatever the estimate (accuracy traded for MACs knowingly).
    pub asked: bool,
}

impl SeparationCost {
    /// The separated layer is estimated faster.
    pub fn pays(&self) -> bool {
        self.separated < self.whole
    }

    /// Whether the kernel runs the rewrite.
    pub fn runs_separated(&self) -> bool {
        self.asked || self.pays()
    }

    /// What runs, for `plan` and `bench`: `separated`, `whole`, or an
    /// approximation asked for against the estimate.
    pub fn decision(&self) -> &'static str {
        match (self.pays(), self.asked) {
            (true, _) => "separated",
            (false, true) => "separated (asked for; whole is estimated faster)",
            (false, false) => "whole",
        }
    }
}

impl std::fmt::Display for SeparationCost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Thousands, but small layers in cycles (not "0k against 0k").
        let n = |c: f64| match c >= 1e5 {
            true => format!("{:.0}k", c / 1e3),
            false => format!("{c:.0}"),
        };
        write!(
            f,
            "estimated {} cycles whole, {} separated",
            n(self.whole),
            n(self.separated)
        )
    }
}

/// Estimated cycles per image of `layer` as `plan_layer` plans it.
fn layer_cycles(layer: &Layer, options: &Options, host: &Host) -> f64 {
    let p = plan_layer(layer, options, host);
    let target = p.target();
    p.groups
        .iter()
        .map(|g| group_cycles(layer, g.first, g.last, &p.host, &target))
        .sum()
}

/// `whole` against `separated`, its rewrite with rank-1 stages split.
pub fn separation_cost(
    whole: &Layer,
    separated: &Layer,
    options: &Options,
    host: &Host,
) -> SeparationCost {
    SeparationCost {
        whole: layer_cycles(whole, options, host),
        separated: layer_cycles(separated, options, host),
        asked: matches!(options.separate, Separation::Rank(_)),
    }
}
