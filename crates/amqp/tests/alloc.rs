//! The hot path allocates nothing: decoding basic.publish + content header + body (and the
//! properties of a header without a headers table) only bumps reference counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use amqp::*;
use bytes::BytesMut;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(|n| n.get())
}

#[test]
fn decoding_a_publish_allocates_nothing() {
    let mut buf = BytesMut::with_capacity(1 << 16);
    let props = BasicProperties {
        content_type: Some(ShortStr::from_static("application/octet-stream")),
        delivery_mode: Some(2),
        message_id: Some(ShortStr::from_static("id-1")),
        ..Default::default()
    };
    let mut property_bytes = BytesMut::new();
    props.encode(&mut property_bytes);
    for _ in 0..3 {
        let publish = Method::from(BasicPublish {
            exchange: ShortStr::from_static("amq.topic"),
            routing_key: ShortStr::from_static("a.b.c"),
            mandatory: false,
            immediate: false,
        });
        encode_method_frame(1, &publish, &mut buf);
        encode_content_header_frame(1, 60, 1000, &property_bytes, &mut buf);
        encode_body_frames(1, &[9u8; 1000], 131072, &mut buf);
    }
    // The first split of a fresh buffer moves it to shared storage once; later frames must not.
    for _ in 0..3 {
        Frame::decode(&mut buf, 131072).unwrap();
    }

    let mut kept = Vec::with_capacity(6);
    let mut parsed = Vec::with_capacity(2);
    let before = allocations();
    for _ in 0..6 {
        let frame = Frame::decode(&mut buf, 131072).unwrap();
        if let Frame::Header { header, .. } = &frame {
            parsed.push(BasicProperties::decode(&header.property_bytes).unwrap());
        }
        kept.push(frame);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "decoding allocated");
    assert!(buf.is_empty());
    assert_eq!(parsed[0], props);
    assert!(matches!(
        kept[0],
        Frame::Method {
            method: Method::BasicPublish(_),
            ..
        }
    ));
}
