//! The whole client suite is one test binary (one link step); each module covers one
//! numbered item of the broker's first issue.

mod basic;
mod confirms_tx;
mod connection;
mod content;
mod exchanges;
mod queues;
mod raw_frames;
mod reply_to;
