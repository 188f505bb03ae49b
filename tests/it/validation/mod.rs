//! Validators, verdicts, downloads and status (issue #3; contract §3-§5): the whole
//! flow on the embedded default, client → gateway → validator → verdict → perm or
//! reject → `platform.upload.available`.


mod support;

mod downloads;
mod flow;
mod status;
mod subscribers;
mod verdicts;
