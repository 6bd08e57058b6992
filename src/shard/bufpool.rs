//! Per-core pools of I/O buffers.
//!
//! An idle keep-alive connection holds no buffer: it takes one from its
//! core's pool only while bytes are being read or written, and gives it back
//! as soon as it would wait again (see `conn.rs`). This is what keeps 10,000
//! idle connections within a few KiB each while an active connection still
//! reads into a buffer big enough for a maximal request head.
//!
//! A pool belongs to one core (`!Send`, `RefCell`); the free list is
//! bounded so a burst of activity does not pin memory forever.

use std::cell::RefCell;

pub struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    /// Size of every buffer handed out (read buffers are used at this length).
    buffer_bytes: usize,
    /// Most free buffers kept; extra returned buffers are freed.
    free_max: usize,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, free_max: usize) -> BufferPool {
        BufferPool {
            free: RefCell::new(Vec::new()),
            buffer_bytes,
            free_max,
        }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// A zero-filled buffer of `buffer_bytes` length (for reading into).
    pub fn take_read(&self) -> Vec<u8> {
        match self.free.borrow_mut().pop() {
            Some(mut b) => {
                b.resize(self.buffer_bytes, 0);
                b
            }
            None => vec![0; self.buffer_bytes],
        }
    }

    /// An empty buffer with at least `buffer_bytes` capacity (for writing).
    pub fn take_write(&self) -> Vec<u8> {
        match self.free.borrow_mut().pop() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(self.buffer_bytes),
        }
    }

    /// Returns a buffer; oversized ones (grown by a large response) and any
    /// beyond `free_max` are freed instead.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < self.buffer_bytes || buf.capacity() > self.buffer_bytes * 2 {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.free_max {
            free.push(buf);
        }
    }
}
