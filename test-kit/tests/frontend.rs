// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test frontend against a small real backend served by vhost-user-backend: an echo
//! device that writes every chain's readable bytes back, reversed, into its writable buffers.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use test_kit::frontend::{Buf, Completion, FrontendError, FrontendOptions, TestFrontend};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Record {
    stopped: Vec<u32>,
    resets: u32,
}

struct Echo {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    event_idx: bool,
    record: Arc<Mutex<Record>>,
}

impl Echo {
    /// One pass over the queue, under the vring lock throughout. A ring that is stopped or
    /// disabled is left alone: vhost-user-backend's worker also calls in for a queue it was
    /// told about before a GET_VRING_BASE it has not seen yet, and an error returned from
    /// here would end that worker thread for good.
    fn process(&self, vring: &VringRwLock) -> std::io::Result<()> {
        let mem = self.mem.memory();
        let mut state = vring.get_mut();
        loop {
            if !state.is_enabled() || !state.get_queue().ready() {
                return Ok(());
            }
            state
                .disable_notification()
                .map_err(std::io::Error::other)?;
            let chains: Vec<_> = state
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(std::io::Error::other)?
                .collect();
            for chain in chains {
                let head = chain.head_index();
                let mut data = Vec::new();
                let written = match (chain.clone().reader(&*mem), chain.clone().writer(&*mem)) {
                    (Ok(mut r), Ok(mut w)) => {
                        r.read_to_end(&mut data)?;
                        data.reverse();
                        let n = data.len().min(w.available_bytes());
                        w.write_all(&data[..n])?;
                        u32::try_from(n).unwrap()
                    }
                    _ => 0,
                };
                state
                    .add_used(head, written)
                    .map_err(std::io::Error::other)?;
            }
            state.signal_used_queue()?;
            if !self.event_idx || !state.enable_notification().map_err(std::io::Error::other)? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackendMut for Echo {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }
    fn max_queue_size(&self) -> usize {
        256
    }
    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | test_kit::frontend::VHOST_USER_F_PROTOCOL_FEATURES
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
    }
    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }
    fn reset_device(&mut self) {
        self.record.lock().unwrap().resets += 1;
    }
    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        self.record.lock().unwrap().stopped.push(queue_index);
        Ok(())
    }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config: Vec<u8> = (0u8..16).collect();
        let start = usize::try_from(offset).unwrap();
        let end = start + usize::try_from(size).unwrap();
        config
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = mem;
        Ok(())
    }
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let q = usize::from(device_event);
        if let Some(v) = vrings.get(q) {
            self.process(v)?;
        }
        Ok(())
    }
}

/// Serves the echo device on `path` in a thread, one connection.
fn serve(path: &Path) -> (thread::JoinHandle<()>, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let backend = Arc::new(std::sync::RwLock::new(Echo {
        mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        event_idx: false,
        record: record.clone(),
    }));
    let mut daemon = VhostUserDaemon::new(
        "echo".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .unwrap();
    let path = path.to_path_buf();
    let h = thread::spawn(move || {
        // Ends when the frontend disconnects.
        let _ = daemon.serve(&path);
    });
    (h, record)
}

fn options() -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![8, 8],
        protocol_features: FrontendOptions::default().protocol_features
            | VhostUserProtocolFeatures::RESET_DEVICE,
        ..FrontendOptions::default()
    }
}

#[test]
fn negotiates_and_reads_config() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, _) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    assert_ne!(fe.acked_features() & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
    assert!(fe
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG));
    assert_eq!(fe.get_config(4, 4).unwrap(), vec![4, 5, 6, 7]);
    fe.disconnect();
    h.join().unwrap();
}

#[test]
fn direct_and_indirect_chains_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, _) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    for indirect in [false, true] {
        let head = fe
            .submit(
                0,
                &[Buf::Out(b"ab"), Buf::Out(b"cd"), Buf::In(3), Buf::In(2)],
                indirect,
            )
            .unwrap();
        fe.kick(0).unwrap();
        let c = fe.wait_used(0, TIMEOUT).unwrap();
        assert_eq!(c.id, head);
        assert_eq!(c.len, 4);
        assert_eq!(c.ins, vec![b"dcb".to_vec(), vec![b'a', 0xa5]]);
    }
    assert_eq!(fe.in_flight(0), 0);
    fe.disconnect();
    h.join().unwrap();
}

#[test]
fn many_requests_wrap_the_ring_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, _) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    for i in 0u32..100 {
        let out = i.to_le_bytes();
        let c = fe
            .request(1, &[Buf::Out(&out), Buf::In(4)], TIMEOUT)
            .unwrap();
        let mut expect = out.to_vec();
        expect.reverse();
        assert_eq!(c.ins[0], expect);
    }
    // A full ring of 8 in flight at once.
    for i in 0u8..8 {
        fe.submit(0, &[Buf::Out(&[i]), Buf::In(1)], true).unwrap();
    }
    assert_eq!(fe.in_flight(0), 8);
    let err = fe.submit(0, &[Buf::Out(&[9])], true).unwrap_err();
    assert!(matches!(err, FrontendError::QueueFull { .. }));
    fe.kick(0).unwrap();
    let got: Vec<u8> = (0..8)
        .map(|_| fe.wait_used(0, TIMEOUT).unwrap().ins[0][0])
        .collect();
    assert_eq!(got, (0u8..8).collect::<Vec<_>>());
    fe.disconnect();
    h.join().unwrap();
}

/// One `Completion` reused for chains of different shapes holds exactly the last one's
/// buffers; the in-flight table follows direct and indirect chains alike.
#[test]
fn a_reused_completion_takes_each_chains_shape() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, _) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    let mut c = Completion::default();
    assert!(!fe.poll_used_into(0, &mut c).unwrap());
    let shapes: [&[Buf]; 4] = [
        &[Buf::Out(b"abc"), Buf::In(2), Buf::In(2)],
        &[Buf::Out(b"xy"), Buf::In(4)],
        &[Buf::Out(b"q"), Buf::In(1), Buf::In(1), Buf::In(1)],
        &[Buf::Out(b"hello"), Buf::In(5)],
    ];
    let want: [&[&[u8]]; 4] = [
        &[b"cb", b"a\xa5"],
        &[b"yx\xa5\xa5"],
        &[b"q", b"\xa5", b"\xa5"],
        &[b"olleh"],
    ];
    for (i, (bufs, want)) in shapes.iter().zip(want).enumerate() {
        let head = fe.submit(0, bufs, i % 2 == 1).unwrap();
        fe.kick(0).unwrap();
        fe.wait_used_into(0, TIMEOUT, &mut c).unwrap();
        assert_eq!(c.id, head);
        assert_eq!(c.ins, want.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
        assert_eq!(fe.in_flight(0), 0);
    }
    // Nothing else was used.
    assert!(!fe.poll_used_into(0, &mut c).unwrap());
    fe.disconnect();
    h.join().unwrap();
}

#[test]
fn stop_and_reset_reach_the_backend_and_restart_works() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, record) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    fe.stop_queue(1).unwrap();
    assert_eq!(record.lock().unwrap().stopped, vec![1]);
    fe.reset().unwrap();
    assert_eq!(record.lock().unwrap().resets, 1);
    fe.restart().unwrap();
    let c = fe
        .request(0, &[Buf::Out(b"xy"), Buf::In(2)], TIMEOUT)
        .unwrap();
    assert_eq!(c.ins[0], b"yx");
    fe.disconnect();
    h.join().unwrap();
}

#[test]
fn bad_chains_are_refused_before_anything_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let (h, _) = serve(&sock);
    let mut fe = TestFrontend::connect(&sock, options(), TIMEOUT).unwrap();
    assert!(matches!(
        fe.submit(0, &[], false),
        Err(FrontendError::BadChain(_))
    ));
    assert!(matches!(
        fe.submit(0, &[Buf::In(5000)], false),
        Err(FrontendError::BadChain(_))
    ));
    assert!(matches!(
        fe.submit(7, &[Buf::In(1)], false),
        Err(FrontendError::BadQueue(7))
    ));
    assert_eq!(fe.in_flight(0), 0);
    // Still usable.
    let c = fe
        .request(0, &[Buf::Out(b"1"), Buf::In(1)], TIMEOUT)
        .unwrap();
    assert_eq!(c.ins[0], b"1");
    fe.disconnect();
    h.join().unwrap();
}
