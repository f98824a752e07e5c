//! Per-stage code plan: the blocking decisions ([`Schedule`]), the stage's
//! geometry with its border classes, and the channel "units" (one
//! accumulator vector per output pixel each) with the packed-weight layout
//! the generated loops read. Everything here depends only on the stage's
//! shapes, never on weight values, so the machine code can be cached.
//!
//! - `target.rs`: what a generator offers ([`Target`]: lanes, registers)
//!   and which one writes a stage ([`stage_target`]);
//! - `schedule.rs`: register blocking and its cost model ([`schedule_for`],
//!   [`schedule_reason_for`]);
//! - `stage.rs`: the stage plan ([`StagePlan`], [`plan_for`], [`planned_stage`]);
//! - `runs.rs`: its register blocks ([`Unit`], [`Run`]);
//! - `geometry.rs`: taps per column, border classes, column blocks, row
//!   vectors, flat stages ([`tap_range`], [`StagePlan::col_blocks`]);
//! - `shares.rs`: threads sharing output channels ([`channel_shares`],
//!   [`plan_channels`]);
//! - `packing.rs`: the packed-weight layout and the copies that fill it
//!   ([`StagePlan::pack_copies`], [`pack_into`]);
//! - `nest.rs`: the loop nest every generator emits, as data
//!   ([`StagePlan::nest`], [`LoopNest`]);
//! - `taps.rs`: the taps of a register block's kernel row
//!   ([`StagePlan::reduction`], [`StagePlan::dw_taps`]);
//! - `column_pair.rs`: a filter's separated pair computed in registers by
//!   one function ([`column_pair`], [`ColumnPass`]);
//! - `code_size.rs`: the instructions a plan will take ([`code_size()`]);
//! - `streams.rs`: which plans prefetch their stores for writing
//!   ([`mark_streamed_outputs`]);
//! - `tiles.rs`: bf16 stages on AMX tiles or `vdpbf16ps` ([`tile_plan`],
//!   [`dot_plan`], [`TilePlan`]).

mod code_size;
mod column_pair;
mod geometry;
mod nest;
mod packing;
mod runs;
mod schedule;
mod shares;
mod stage;
mod streams;
mod taps;
mod target;
mod tiles;

pub use code_size::{code_size, MIN_CODE_SIZE};
pub use column_pair::{
    column_pair, pack_column_pair, plan_pair, ColumnPass, MAX_ROW_TAPS, STRIP_PIXELS,
};
pub use geometry::{
    call_range, inputs_in_lanes_ok, is_flat, positions, row_block_vectors, tap_range, ColBlock,
    Segment,
};
pub use nest::{
    Block, BlockCols, KernelRows, LoopNest, NextWeights, Offsets, PixelBlocks, Pixels, RowPairs,
    Rows, RunLoop,
};
pub use packing::{pack, pack_into, PackCopy, PackSource, PACK_ROW_BYTES, PACK_SLACK_BYTES};
pub use runs::{InSrc, OutDst, Run, Unit};
pub use schedule::{
    schedule, schedule_for, schedule_reason, schedule_reason_for, Schedule, DW_ACCUMULATORS,
    DW_SHARED_ACCUMULATORS, MAX_ACCUMULATORS, REDUCE_ACCUMULATORS,
};
pub use shares::{channel_shares, plan_channels};
pub use stage::{
    plan_for, plan_for_cranelift, planned_stage, StagePlan, Strategy, CHANNELS_OUTER_BYTES,
};
pub use streams::{
    mark_streamed_outputs, streams_past_caches, PREFETCH_STORES_AHEAD,
    PREFETCH_STORES_EIGHTHS_OF_L3,
};
pub use taps::{ColumnTaps, DwColumn, DwInputColumns, DwTaps, InputColumn, Reduction, TapInput};
pub use target::{stage_target, Bf16Units, Target, LANES, MAX_LANES};
pub use tiles::{
    bf16_intermediates, dot_plan, dot_plan_on, paired_stage, reads_bf16, reads_bf16_pairs,
    round_outputs, tile_plan, writes_bf16, TilePlan, B_TILE_BYTES, K_CHUNK, MAX_TILE_SCRATCH,
    M_BLOCK, N_BLOCK,
};
