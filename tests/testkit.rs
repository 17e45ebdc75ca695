//! Tests of the test kit itself (testkit/): what its parts decide without a
//! service running, and that it finds the programs cargo built. They live
//! here, as a test of the packetflix package, so `cargo nextest run
//! --all-targets` at the top runs them with every other test.

use std::path::Path;

use packetflix_testkit::bins;

#[test]
fn the_kit_finds_the_binaries_cargo_built_for_this_test() {
    let real = |p: &str| Path::new(p).canonicalize().expect("path exists");
    assert_eq!(bins::service(), real(env!("CARGO_BIN_EXE_packetflix")));
    assert_eq!(
        bins::capture_client(),
        real(env!("CARGO_BIN_EXE_packetflix-capture"))
    );
    assert_eq!(bins::repo(), real(env!("CARGO_MANIFEST_DIR")));
}

/// The stream check of generator streams (`pcapgen::check`), on streams
/// made by the generator's own block builders (`pcapgen::format`).
mod stream_check {
    use packetflix_testkit::pcapgen::format::{self, BYTE_ORDER_MAGIC, SHB_TYPE};
    use packetflix_testkit::pcapgen::StreamCheck;
    use packetflix_testkit::pcapng::build;

    fn block(btype: u32, body: &[u8]) -> Vec<u8> {
        build::block(btype, body, false)
    }

    fn shb() -> Vec<u8> {
        format::shb(None)
    }

    fn idb() -> Vec<u8> {
        format::idb()
    }

    fn epb(seq: u64, stamp: u64) -> Vec<u8> {
        let mut e = format::epb_template(64);
        format::patch_epb(&mut e, seq, stamp, 0);
        e
    }

    fn stream(n: u64) -> Vec<u8> {
        let mut s = shb();
        s.extend(idb());
        for i in 0..n {
            s.extend(epb(i, 1000 + i));
        }
        s
    }

    #[test]
    fn intact_stream_split_at_every_offset_gives_the_same_counts() {
        let s = stream(3);
        for cut in 0..=s.len() {
            let mut c = StreamCheck::new(true);
            c.feed(&s[..cut], 5000);
            c.feed(&s[cut..], 5000);
            assert_eq!(c.finish(), Ok(()), "cut at {cut}");
            assert_eq!((c.blocks(), c.packets(), c.bytes()), (5, 3, s.len() as u64));
            assert_eq!(c.take_latencies(), vec![4000, 3999, 3998]);
        }
    }

    #[test]
    fn byte_by_byte_feeding_is_accepted() {
        let s = stream(2);
        let mut c = StreamCheck::new(false);
        for b in &s {
            c.feed(std::slice::from_ref(b), 0);
        }
        assert_eq!(c.finish(), Ok(()));
        assert_eq!(c.packets(), 2);
    }

    #[test]
    fn sequence_gap_is_reported_with_both_numbers() {
        let mut s = shb();
        s.extend(idb());
        s.extend(epb(0, 0));
        s.extend(epb(2, 0));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        let e = c.finish().unwrap_err();
        assert!(e.contains("expected packet 1 but got 2"), "{e}");
    }

    #[test]
    fn mismatched_trailing_length_is_reported() {
        let mut s = stream(2);
        let n = s.len();
        s[n - 4] ^= 4;
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert!(c.finish().unwrap_err().contains("trailing length"));
    }

    #[test]
    fn lost_bytes_break_the_framing() {
        let mut s = stream(3);
        let cut = shb().len() + idb().len() + 10;
        s.drain(cut..cut + 4);
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert!(c.finish().is_err());
    }

    #[test]
    fn stream_cut_inside_a_block_is_reported_at_the_end() {
        let s = stream(1);
        let mut c = StreamCheck::new(false);
        c.feed(&s[..s.len() - 1], 0);
        assert!(c.finish().unwrap_err().contains("inside a block"));
    }

    #[test]
    fn stream_not_starting_with_shb_is_rejected() {
        let mut c = StreamCheck::new(false);
        c.feed(&idb(), 0);
        assert!(c.finish().unwrap_err().contains("not an SHB"));
    }

    #[test]
    fn packet_before_idb_is_rejected() {
        let mut s = shb();
        s.extend(epb(0, 0));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert!(c.finish().is_err());
    }

    #[test]
    fn longer_shb_from_the_service_edit_is_accepted() {
        let mut body = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0]);
        body.extend_from_slice(&(-1i64).to_le_bytes());
        body.extend_from_slice(&[1, 0, 8, 0]);
        body.extend_from_slice(b"---\n# ca");
        body.extend_from_slice(&[0, 0, 0, 0]);
        let mut s = block(SHB_TYPE, &body);
        s.extend(idb());
        s.extend(epb(0, 0));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert_eq!(c.finish(), Ok(()));
        assert_eq!(c.packets(), 1);
    }

    /// An EPB of `epb(seq, 0)` on interface `iface`.
    fn epb_on(iface: u32, seq: u64) -> Vec<u8> {
        let mut e = epb(seq, 0);
        e[8..12].copy_from_slice(&iface.to_le_bytes());
        e
    }

    #[test]
    fn merged_streams_are_numbered_per_interface_whenever_their_idb_comes() {
        let mut s = shb();
        s.extend(idb());
        s.extend(epb_on(0, 0));
        s.extend(idb());
        s.extend(epb_on(1, 0));
        s.extend(epb_on(0, 1));
        s.extend(epb_on(1, 1));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert_eq!(c.finish(), Ok(()));
        assert_eq!((c.interfaces(), c.packets()), (2, 4));
    }

    #[test]
    fn a_gap_on_one_of_several_interfaces_names_it() {
        let mut s = shb();
        s.extend(idb());
        s.extend(idb());
        s.extend(epb_on(0, 0));
        s.extend(epb_on(1, 1));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        let e = c.finish().unwrap_err();
        assert!(
            e.contains("sequence gap on interface 1: expected packet 0 but got 1"),
            "{e}"
        );
    }

    #[test]
    fn packet_on_an_interface_not_yet_described_is_rejected() {
        let mut s = shb();
        s.extend(idb());
        s.extend(epb_on(1, 0));
        let mut c = StreamCheck::new(false);
        c.feed(&s, 0);
        assert!(c.finish().unwrap_err().contains("interface 1, of 1"));
    }

    #[test]
    fn shb_comments_are_read_once_the_shb_is_in() {
        let mut c = StreamCheck::new(false);
        assert_eq!(c.shb_comments(), None);
        c.feed(&format::shb(Some("first")), 0);
        assert_eq!(c.shb_comments(), Some(&["first".to_string()][..]));
    }
}

/// The lean websocket frame reader (`wsframes`).
mod frames {
    use packetflix_testkit::wsframes::*;
    use tungstenite::handshake::derive_accept_key;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn run(bytes: &[u8], cut: usize) -> (Vec<u8>, Vec<Control>, Result<(), String>) {
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        let mut ctl = Vec::new();
        let mut res = r.feed(&bytes[..cut], &mut |p| out.extend_from_slice(p), &mut ctl);
        if res.is_ok() {
            res = r.feed(&bytes[cut..], &mut |p| out.extend_from_slice(p), &mut ctl);
        }
        (out, ctl, res)
    }

    #[test]
    fn binary_payloads_of_all_length_encodings_reach_the_sink_split_anywhere() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut s = frame(0x82, b"abc");
        s.extend(frame(0x82, &big[..300]));
        s.extend(frame(0x82, &big));
        let mut want = b"abc".to_vec();
        want.extend_from_slice(&big[..300]);
        want.extend_from_slice(&big);
        for cut in [
            0,
            1,
            2,
            3,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            300,
            s.len() - 1,
            s.len(),
        ] {
            let (out, ctl, res) = run(&s, cut);
            assert_eq!(res, Ok(()), "cut {cut}");
            assert!(ctl.is_empty());
            assert_eq!(out, want, "cut {cut}");
        }
    }

    #[test]
    fn fragmented_message_is_one_message_with_all_payload() {
        let mut s = frame(0x02, b"ab");
        s.extend(frame(0x00, b"cd"));
        s.extend(frame(0x80, b"ef"));
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        r.feed(&s, &mut |p| out.extend_from_slice(p), &mut Vec::new())
            .unwrap();
        assert_eq!(out, b"abcdef");
        assert_eq!(r.messages(), 1);
    }

    #[test]
    fn close_frame_yields_code_and_reason_and_ends_reading() {
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"capture ended");
        let mut s = frame(0x88, &p);
        s.extend(frame(0x82, b"late"));
        for cut in 0..s.len() {
            let (out, ctl, res) = run(&s, cut);
            assert_eq!(res, Ok(()));
            assert!(out.is_empty());
            assert_eq!(
                ctl,
                vec![Control::Close(Some(1000), "capture ended".into())]
            );
        }
    }

    #[test]
    fn ping_between_data_frames_is_reported_and_data_continues() {
        let mut s = frame(0x82, b"a");
        s.extend(frame(0x89, b"hi"));
        s.extend(frame(0x82, b"b"));
        let (out, ctl, res) = run(&s, 4);
        assert_eq!(res, Ok(()));
        assert_eq!(out, b"ab");
        assert_eq!(ctl, vec![Control::Ping(b"hi".to_vec())]);
    }

    #[test]
    fn text_and_masked_frames_are_protocol_errors() {
        assert!(run(&frame(0x81, b"x"), 0).2.unwrap_err().contains("text"));
        let mut masked = frame(0x82, b"");
        masked[1] |= 0x80;
        assert!(run(&masked, 0).2.unwrap_err().contains("masked"));
    }

    #[test]
    fn upgrade_answer_needs_101_and_the_matching_accept_key() {
        let (_, key) = upgrade_request("h", "/capture", &[]);
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n\x02",
            derive_accept_key(key.as_bytes())
        );
        let n = good.len() - 1;
        assert_eq!(
            check_upgrade(good.as_bytes(), &key),
            Ok(Upgrade::Switched(n))
        );
        assert_eq!(
            check_upgrade(&good.as_bytes()[..20], &key),
            Ok(Upgrade::Partial)
        );
        let wrong = good.replace("Accept: ", "Accept: x");
        assert!(check_upgrade(wrong.as_bytes(), &key).is_err());
        let refused = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 3\r\n\r\nuse";
        assert!(check_upgrade(refused.as_bytes(), &key)
            .unwrap_err()
            .contains("426"));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        let f = client_frame(0xA, b"pong!");
        assert_eq!(f[0], 0x8A);
        assert_eq!(f[1], 0x80 | 5);
        let mask = &f[2..6];
        let un: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(un, b"pong!");
    }
}

/// The bench report (`bench::report`).
mod report {
    use packetflix_testkit::bench::report::*;

    fn sample() -> Report {
        let mut ok = Measurement::new("t", "raw-relay");
        ok.metrics.insert("mb_per_s".into(), 812.25);
        let mut pf = Measurement::new("t", "packetflix");
        pf.metrics.insert("mb_per_s".into(), 700.0);
        pf.vs_baseline.insert("mb_per_s".into(), 700.0 / 812.25);
        Report {
            schema: SCHEMA,
            started_unix: 0,
            duration_s: 1.0,
            machine: Machine::default(),
            config: serde_json::json!({}),
            scenarios: vec![Scenario {
                id: "t".into(),
                title: "Throughput".into(),
                method: "count bytes".into(),
                columns: vec![
                    ("mb_per_s".into(), "MB/s".into()),
                    ("vs:mb_per_s".into(), "vs raw".into()),
                ],
                results: vec![
                    ok,
                    pf,
                    Measurement::failed(
                        "t",
                        "websocat",
                        Status::Unavailable,
                        "not installed".into(),
                    ),
                ],
            }],
            targets: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn table_shows_method_values_ratios_and_unavailable_rows() {
        let text = sample().render();
        assert!(text.contains("method: count bytes"));
        assert!(text.contains("812.2") || text.contains("812.3"), "{text}");
        assert!(text.contains("0.862"), "{text}");
        assert!(text.contains("Unavailable: not installed"), "{text}");
    }

    #[test]
    fn json_round_trips_and_names_statuses_in_lowercase() {
        let r = sample();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scenarios"][0]["results"][2]["status"], "unavailable");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(
            back.find("t", "packetflix").unwrap().get("mb_per_s"),
            Some(700.0)
        );
    }
}

/// Percentile rules (`bench::stats`).
mod stats {
    use packetflix_testkit::bench::stats;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_thousand() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(stats::percentile(&v, 50.0), Some(500));
        assert_eq!(stats::percentile(&v, 99.0), Some(990));
        assert_eq!(stats::percentile(&v, 99.9), Some(999));
        assert_eq!(stats::percentile(&v, 100.0), Some(1000));
        assert_eq!(stats::percentile(&v, 0.0), Some(1));
        assert_eq!(stats::percentile(&[], 50.0), None);
    }

    #[test]
    fn median_of_odd_and_even_counts_ignores_non_finite_values() {
        assert_eq!(stats::median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(stats::median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(stats::median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(stats::median(&[]), None);
    }

    #[test]
    fn latency_summary_converts_nanoseconds_to_microseconds() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        v.reverse();
        let s = stats::latency_summary(&mut v).unwrap();
        assert_eq!(
            (s.count, s.p50_us, s.p99_us, s.max_us),
            (100, 50.0, 99.0, 100.0)
        );
        assert!((s.mean_us - 50.5).abs() < 1e-9);
    }
}

/// The synthetic capture program's stream and settings (`pcapgen::format`).
mod pcapgen {
    use std::time::Duration;

    use packetflix_testkit::pcapgen::format::*;

    fn settings(count: u64, corrupt: Corrupt) -> Settings {
        Settings {
            mode: Mode::Stream,
            size: 64,
            count,
            rate: 0,
            chunk: DEFAULT_CHUNK,
            corrupt,
            idle_max: Duration::from_secs(1),
            start_fifo: None,
            comment: None,
        }
    }

    #[test]
    fn header_blocks_are_a_little_endian_shb_then_an_ethernet_idb() {
        let h = header_blocks(None);
        let shb_len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        assert_eq!(u32::from_le_bytes(h[0..4].try_into().unwrap()), SHB_TYPE);
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            BYTE_ORDER_MAGIC
        );
        assert_eq!(&h[shb_len - 4..shb_len], &(shb_len as u32).to_le_bytes());
        let idb = &h[shb_len..];
        assert_eq!(idb.len(), 20);
        assert_eq!(u32::from_le_bytes(idb[0..4].try_into().unwrap()), IDB_TYPE);
        assert_eq!(
            u16::from_le_bytes(idb[8..10].try_into().unwrap()),
            LINKTYPE_ETHERNET
        );
    }

    #[test]
    fn epb_length_covers_padded_data_and_both_length_fields() {
        for size in [34, 35, 64, 1500] {
            let e = epb_template(size);
            assert_eq!(e.len() % 4, 0);
            assert_eq!(e.len(), 32 + pad4(size));
            assert_eq!(&e[4..8], &e[e.len() - 4..]);
            assert_eq!(
                u32::from_le_bytes(e[20..24].try_into().unwrap()) as usize,
                size
            );
        }
    }

    #[test]
    fn patched_epb_carries_sequence_and_monotonic_stamp_after_the_magic() {
        let mut e = epb_template(64);
        patch_epb(&mut e, 7, 123_456_789, 1);
        let d = &e[EPB_HEAD..];
        assert_eq!(&d[OFF_MAGIC..OFF_MAGIC + 4], PAYLOAD_MAGIC);
        assert_eq!(
            u64::from_le_bytes(d[OFF_SEQ..OFF_SEQ + 8].try_into().unwrap()),
            7
        );
        assert_eq!(
            u64::from_le_bytes(d[OFF_STAMP..OFF_STAMP + 8].try_into().unwrap()),
            123_456_789
        );
    }

    #[test]
    fn phases_stay_inside_the_period_and_spread_over_it() {
        let period = 10_000_000;
        let phases: Vec<u64> = (0..1000)
            .map(|pid| phase(123_456_789 ^ pid, period))
            .collect();
        assert!(phases.iter().all(|&p| p < period));
        // Each tenth of the period gets some of a thousand seeds.
        for tenth in 0..10 {
            let lo = tenth * period / 10;
            let n = phases
                .iter()
                .filter(|&&p| p >= lo && p < lo + period / 10)
                .count();
            assert!(n > 50, "tenth {tenth}: {n}");
        }
    }

    #[test]
    fn sequencer_counts_up_without_corruption() {
        let mut s = Sequencer::new(&settings(10, Corrupt::None));
        let seqs: Vec<u64> = (0..10).map(|_| s.take().0).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn seq_corruption_skips_exactly_one_number_halfway() {
        let mut s = Sequencer::new(&settings(10, Corrupt::Seq));
        let seqs: Vec<u64> = (0..10).map(|_| s.take().0).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn len_corruption_marks_one_packet_and_keeps_numbers() {
        let mut s = Sequencer::new(&settings(10, Corrupt::Len));
        let taken: Vec<(u64, bool)> = (0..10).map(|_| s.take()).collect();
        assert_eq!(taken.iter().filter(|t| t.1).count(), 1);
        assert!(taken[5].1);
        assert_eq!(
            taken.iter().map(|t| t.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupted_length_is_restored_for_the_next_packet_in_the_same_slot() {
        let mut e = epb_template(64);
        corrupt_epb(&mut e, Corrupt::Len);
        assert_ne!(&e[4..8], &e[e.len() - 4..]);
        restore_epb_tail(&mut e);
        assert_eq!(&e[4..8], &e[e.len() - 4..]);
    }

    #[test]
    fn settings_written_as_variables_read_back_the_same() {
        let s = Settings {
            mode: Mode::Idle,
            size: 1500,
            count: 7,
            rate: 1000,
            chunk: 4096,
            corrupt: Corrupt::Len,
            idle_max: Duration::from_secs(3),
            start_fifo: Some("/tmp/start.fifo".into()),
            comment: Some("synthetic".into()),
        };
        let env = s.env();
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(Settings::from_vars(&get), Ok(s));
        assert_eq!(Settings::from_vars(&|_| None), Ok(Settings::default()));
    }

    #[test]
    fn shb_comment_comes_before_the_writer_option_and_keeps_the_block_aligned() {
        let plain = shb(None);
        let with = shb(Some("abcde"));
        assert_eq!(with.len(), plain.len() + 4 + 8);
        assert_eq!(&with[24..28], &[1, 0, 5, 0]);
        assert_eq!(&with[28..33], b"abcde");
        let n = with.len();
        assert_eq!(&with[n - 4..], &(n as u32).to_le_bytes());
    }
}

/// The pcapng reader's view of what the native engine and dumpcap write
/// besides packets: IDB options, timestamps, the statistics at the end.
mod reader {
    use packetflix_testkit::pcapng::{build, Pcapng, IF_NAME, IF_TSRESOL, ISB_IFDROP, ISB_IFRECV};

    /// A stream of one interface in nanoseconds: a packet at `packet_ns`,
    /// then an ISB at `isb_ns` covering `start`..`end`.
    fn stream(be: bool, packet_ns: u64, isb_ns: u64, start: u64, end: u64) -> Vec<u8> {
        let mut s = build::shb(&[], be);
        s.extend(build::idb_with(
            1,
            &[(IF_NAME, b"eth0"), (IF_TSRESOL, &[9])],
            be,
        ));
        s.extend(build::epb_at(0, packet_ns, &[0xaa; 60], be));
        s.extend(build::isb(0, isb_ns, start, end, 7, 2, be));
        s
    }

    fn now_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    #[test]
    fn interface_options_times_and_statistics_read_in_both_byte_orders() {
        let t = now_ns();
        for be in [false, true] {
            let p = Pcapng::parse(&stream(be, t, t + 10, t - 5, t + 9)).unwrap();
            let i = &p.interfaces()[0];
            assert_eq!((i.snaplen, i.tsresol()), (262144, 9));
            assert_eq!(i.option(IF_NAME), Some(&b"eth0"[..]));
            assert_eq!(p.packets[0].ts, t);
            assert_eq!(p.ts_ns(0, t), Some(u128::from(t)));
            assert_eq!(p.stats.len(), 1);
            assert_eq!(p.stats[0].counter(ISB_IFRECV), Some(7));
            assert_eq!(p.stats[0].counter(ISB_IFDROP), Some(2));
            assert_eq!(p.check_final_isbs(None), Ok(()));
        }
    }

    #[test]
    fn final_statistics_out_of_order_or_in_the_wrong_unit_are_reported() {
        let t = now_ns();
        // Ends before it starts.
        let p = Pcapng::parse(&stream(false, t, t + 10, t + 9, t - 5)).unwrap();
        assert!(p.check_final_isbs(None).is_err());
        // Before the last packet.
        let p = Pcapng::parse(&stream(false, t, t - 10, t - 20, t - 10)).unwrap();
        assert!(p.check_final_isbs(None).is_err());
        // Microseconds read as the interface's nanoseconds are in 1970;
        // read as microseconds they are fine.
        let us = t / 1000;
        let p = Pcapng::parse(&stream(false, t - 5000, us + 1, us - 5, us)).unwrap();
        assert!(p.check_final_isbs(None).is_err());
        assert_eq!(p.check_final_isbs(Some(6)), Ok(()));
        // A missing ISB.
        let mut s = build::shb(&[], false);
        s.extend(build::idb_with(1, &[(IF_TSRESOL, &[9])], false));
        let p = Pcapng::parse(&s).unwrap();
        assert!(p.check_final_isbs(None).is_err());
    }
}

/// Counting the packet sockets a process holds in a namespace, as the
/// tests do for the native engine's rings.
mod packet_sockets {
    use std::os::fd::{FromRawFd, OwnedFd};

    use packetflix_testkit::{procs, Netns};

    /// A packet socket made inside `ns` (a thread enters it and ends).
    fn packet_socket_in(ns: &Netns) -> OwnedFd {
        let path = ns.path();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // SAFETY: socket() with constant arguments; checked below.
            let fd = unsafe { nix::libc::socket(nix::libc::AF_PACKET, nix::libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: a descriptor just made and owned here alone.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_packet_socket_counts_in_its_own_namespace_only_while_it_is_open() {
        let (a, b) = (Netns::new(), Netns::new());
        let me = std::process::id() as i32;
        assert_eq!(procs::packet_sockets_of(me, &a.path()), 0);
        let s = packet_socket_in(&a);
        assert_eq!(procs::packet_sockets_of(me, &a.path()), 1);
        assert_eq!(procs::packet_sockets_of(me, &b.path()), 0);
        drop(s);
        assert_eq!(procs::packet_sockets_of(me, &a.path()), 0);
    }
}

/// The traffic programs declare their C structures by hand (they are
/// compiled without crates); here those layouts meet the `libc` crate's.
mod traffic_sys {
    use std::mem::{align_of, size_of};

    use nix::libc;
    use packetflix_testkit::traffic::sys;

    #[test]
    fn hand_written_layouts_match_the_c_library() {
        assert_eq!(size_of::<sys::Timespec>(), size_of::<libc::timespec>());
        assert_eq!(size_of::<sys::EpollEvent>(), size_of::<libc::epoll_event>());
        assert_eq!(
            align_of::<sys::EpollEvent>(),
            align_of::<libc::epoll_event>()
        );
        assert_eq!(size_of::<sys::SockaddrLl>(), size_of::<libc::sockaddr_ll>());
        assert_eq!(size_of::<sys::Iovec>(), size_of::<libc::iovec>());
        assert_eq!(size_of::<sys::Msghdr>(), size_of::<libc::msghdr>());
        assert_eq!(size_of::<sys::Mmsghdr>(), size_of::<libc::mmsghdr>());
        assert_eq!(align_of::<sys::Mmsghdr>(), align_of::<libc::mmsghdr>());
        assert_eq!(
            size_of::<sys::TpacketReq3>(),
            size_of::<libc::tpacket_req3>()
        );
        assert_eq!(sys::TPACKET_REQ_LEN, size_of::<libc::tpacket_req>());
        assert_eq!(
            size_of::<sys::TpacketStats>(),
            size_of::<libc::tpacket_stats_v3>()
        );
        assert_eq!(size_of::<sys::Rusage>(), size_of::<libc::rusage>());
    }

    #[test]
    fn hand_written_constants_match_the_c_library() {
        assert_eq!(sys::AF_PACKET, libc::AF_PACKET);
        assert_eq!(sys::SOCK_RAW, libc::SOCK_RAW);
        assert_eq!(sys::SOCK_CLOEXEC, libc::SOCK_CLOEXEC);
        assert_eq!(sys::SOL_PACKET, libc::SOL_PACKET);
        assert_eq!(sys::PACKET_RX_RING, libc::PACKET_RX_RING);
        assert_eq!(sys::PACKET_STATISTICS, libc::PACKET_STATISTICS);
        assert_eq!(sys::PACKET_VERSION, libc::PACKET_VERSION);
        assert_eq!(sys::PACKET_QDISC_BYPASS, libc::PACKET_QDISC_BYPASS);
        assert_eq!(sys::TPACKET_V2, libc::tpacket_versions::TPACKET_V2 as i32);
        assert_eq!(sys::TPACKET_V3, libc::tpacket_versions::TPACKET_V3 as i32);
        assert_eq!(i32::from(sys::ETH_P_ALL), libc::ETH_P_ALL);
        assert_eq!(i32::from(sys::ETH_P_IP), libc::ETH_P_IP);
        assert_eq!(u64::from(sys::TP_STATUS_USER), libc::TP_STATUS_USER as u64);
        assert_eq!(sys::MAP_SHARED, libc::MAP_SHARED);
        assert_eq!(sys::EPOLL_CLOEXEC, libc::EPOLL_CLOEXEC);
        assert_eq!(sys::EPOLL_CTL_ADD, libc::EPOLL_CTL_ADD);
        assert_eq!(sys::EPOLL_CTL_DEL, libc::EPOLL_CTL_DEL);
        assert_eq!(sys::EPOLLIN, libc::EPOLLIN as u32);
        assert_eq!(sys::EPOLLERR, libc::EPOLLERR as u32);
        assert_eq!(sys::EPOLLHUP, libc::EPOLLHUP as u32);
        assert_eq!(sys::CLONE_NEWNET, libc::CLONE_NEWNET);
        assert_eq!(sys::PR_SET_PDEATHSIG, libc::PR_SET_PDEATHSIG);
        assert_eq!(sys::SIGKILL as i32, libc::SIGKILL);
        assert_eq!(sys::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC);
        assert_eq!(sys::TIMER_ABSTIME, libc::TIMER_ABSTIME);
        assert_eq!(sys::EINTR, libc::EINTR);
    }
}
