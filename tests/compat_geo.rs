//! The geo commands against a real redis-server 7.0: the same script of raw
//! commands on a fresh redis-server and a fresh node, every raw reply
//! compared byte for byte (coordinates with 17 decimals, distances with 4,
//! the order of unsorted search results, the exact error texts), and the
//! destination sets of the store forms read back with ZRANGE WITHSCORES.
//!
//! Ignored in a plain `cargo test` (needs redis-server); `.ci/run` runs it
//! with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use std::time::Duration;

fn exchange(s: &mut std::net::TcpStream, args: &[String]) -> Vec<u8> {
    use std::io::{Read, Write};
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    s.write_all(&slotway::resp::command_bytes(&words)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Ok(Some(n)) = slotway::resp::scan::frame_len(&out) {
            assert_eq!(n, out.len(), "one reply per request: {args:?}");
            return out;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed during {args:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Real places (longitude, latitude).
const CITIES: &[(&str, f64, f64)] = &[
    ("Palermo", 13.361389, 38.115556),
    ("Catania", 15.087269, 37.502669),
    ("Rome", 12.496366, 41.902782),
    ("Milan", 9.189982, 45.464204),
    ("Naples", 14.268124, 40.851775),
    ("Florence", 11.255814, 43.769562),
    ("Venice", 12.315515, 45.440847),
    ("Paris", 2.352222, 48.856613),
    ("London", -0.127758, 51.507351),
    ("Berlin", 13.404954, 52.520008),
    ("Madrid", -3.70379, 40.416775),
    ("Lisbon", -9.139337, 38.722252),
    ("Vienna", 16.373819, 48.208174),
    ("Zurich", 8.541694, 47.376887),
    ("Athens", 23.727539, 37.983810),
    ("Istanbul", 28.978359, 41.008238),
    ("Moscow", 37.617300, 55.755826),
    ("Reykjavik", -21.817439, 64.126521),
    ("Tromso", 18.955324, 69.649208),
    ("Longyearbyen", 15.633333, 78.216667),
    ("NewYork", -74.005941, 40.712784),
    ("SanFrancisco", -122.419416, 37.774929),
    ("Anchorage", -149.900278, 61.218056),
    ("Honolulu", -157.858333, 21.306944),
    ("Tokyo", 139.691706, 35.689487),
    ("Sydney", 151.209296, -33.868820),
    ("Auckland", 174.763336, -36.848461),
    ("Suva", 178.441895, -18.141600),
    ("Apia", -171.751990, -13.759029),
    ("BuenosAires", -58.381559, -34.603684),
    ("Ushuaia", -68.303004, -54.801912),
    ("CapeTown", 18.424055, -33.924870),
    ("Nairobi", 36.821946, -1.292066),
    ("Quito", -78.467838, -0.180653),
    ("Singapore", 103.819836, 1.352083),
    ("McMurdo", 166.668235, -77.846323),
];

fn cmd(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn script() -> Vec<Vec<String>> {
    let mut s: Vec<Vec<String>> = Vec::new();
    let mut add = |w: &[&str]| s.push(cmd(w));
    // GEOADD: cities one command, options, edge coordinates, errors.
    let mut all = vec!["geoadd".to_string(), "eu".to_string()];
    for (name, lon, lat) in CITIES {
        all.push(lon.to_string());
        all.push(lat.to_string());
        all.push(name.to_string());
    }
    let all_ref: Vec<&str> = all.iter().map(String::as_str).collect();
    add(&all_ref);
    add(&all_ref);
    add(&["zrange", "eu", "0", "-1", "withscores"]);
    add(&["geoadd", "eu", "ch", "13.361389", "38.115556", "Palermo"]);
    add(&["geoadd", "eu", "ch", "13.4", "38.1", "Palermo"]);
    add(&[
        "geoadd",
        "eu",
        "CH",
        "XX",
        "13.361389",
        "38.115556",
        "Palermo",
        "1",
        "1",
        "Nowhere",
    ]);
    add(&["geoadd", "eu", "nx", "0", "0", "Palermo", "1", "1", "Null"]);
    add(&[
        "geoadd", "eu", "nx", "ch", "0", "0", "Palermo", "1", "2", "Null",
    ]);
    add(&["geoadd", "eu", "xx", "nx", "0", "0", "a"]);
    add(&["geoadd", "eu", "gt", "0", "0", "a"]);
    add(&["geoadd", "eu", "0", "0", "a", "1"]);
    add(&["geoadd", "eu", "nx", "ch", "xx"]);
    add(&["geoadd", "eu", "nx", "ch", "ch"]);
    add(&["geoadd", "eu", "200", "100", "bad"]);
    add(&["geoadd", "eu", "0", "0", "ok", "-180.1", "0", "bad"]);
    add(&["geoadd", "eu", "0", "85.05112879", "bad"]);
    add(&["geoadd", "eu", "0", "-85.05112879", "bad"]);
    add(&["geoadd", "eu", "x", "0", "bad"]);
    add(&["geoadd", "eu", "0", "y", "bad"]);
    add(&["geoadd", "eu", "inf", "0", "bad"]);
    add(&["geoadd", "eu", "1e400", "0", "bad"]);
    add(&["geoadd", "eu", "nan", "0", "bad"]);
    add(&["geoadd", "eu", "1", "2"]);
    add(&["zscore", "eu", "ok"]);
    add(&["zscore", "eu", "Null"]);
    add(&[
        "geoadd",
        "edge",
        "-180",
        "-85.05112878",
        "sw",
        "180",
        "85.05112878",
        "ne",
        "-180",
        "85.05112878",
        "nw",
        "180",
        "-85.05112878",
        "se",
        "0",
        "0",
        "zero",
        "-0",
        "-0",
        "negzero",
        "179.9999999",
        "0",
        "east",
        "-179.9999999",
        "0",
        "west",
        "0",
        "85",
        "north",
        "0",
        "-85",
        "south",
        "1e-10",
        "1e-10",
        "tiny",
    ]);
    add(&["zrange", "edge", "0", "-1", "withscores"]);
    // Scores no GEOADD makes, decoded anyway.
    add(&[
        "zadd",
        "edge",
        "-1",
        "neg",
        "1e300",
        "big",
        "4503599627370496",
        "p52",
        "inf",
        "pinf",
    ]);
    let edge_members = [
        "sw", "ne", "nw", "se", "zero", "negzero", "east", "west", "north", "south", "tiny", "neg",
        "big", "p52", "pinf", "absent",
    ];
    let mut pos = vec!["geopos", "edge"];
    pos.extend(edge_members);
    add(&pos);
    let mut hash = vec!["geohash", "edge"];
    hash.extend(edge_members);
    add(&hash);
    let mut pos = vec!["geopos", "eu"];
    pos.extend(CITIES.iter().map(|c| c.0));
    add(&pos);
    let mut hash = vec!["geohash", "eu"];
    hash.extend(CITIES.iter().map(|c| c.0));
    add(&hash);
    add(&["geopos", "missing", "a", "b"]);
    add(&["geohash", "missing", "a"]);
    add(&["geopos", "eu"]);
    add(&["geohash", "eu"]);
    // GEODIST
    for (a, b) in [
        ("Palermo", "Catania"),
        ("London", "Paris"),
        ("Sydney", "NewYork"),
        ("Suva", "Apia"),
        ("Palermo", "Palermo"),
        ("Ushuaia", "McMurdo"),
        ("Quito", "Singapore"),
    ] {
        for unit in ["", "m", "km", "KM", "ft", "mi"] {
            let mut c = vec!["geodist", "eu", a, b];
            if !unit.is_empty() {
                c.push(unit);
            }
            add(&c);
        }
    }
    add(&["geodist", "edge", "sw", "ne"]);
    add(&["geodist", "edge", "east", "west", "km"]);
    add(&["geodist", "edge", "north", "south", "km"]);
    add(&["geodist", "edge", "zero", "negzero"]);
    add(&["geodist", "eu", "Palermo", "absent"]);
    add(&["geodist", "missing", "a", "b"]);
    add(&["geodist", "missing", "a", "b", "parsecs"]);
    add(&["geodist", "eu", "Palermo", "Catania", "yd"]);
    add(&["geodist", "eu", "Palermo", "Catania", "km", "x"]);
    add(&["geodist", "eu", "Palermo"]);
    // Searches: every shape, from coordinates and from a member, sorted
    // and unsorted (the cell order), with every option.
    let centers: &[(&str, &str, &str)] = &[
        ("Palermo", "13.361389", "38.115556"),
        ("Rome", "12.5", "41.9"),
        ("London", "0", "51.5"),
        ("Tromso", "19", "69.6"),
        ("Longyearbyen", "15", "80.5"),
        ("Suva", "179.9", "-18"),
        ("Apia", "-179.9", "-13.7"),
        ("Quito", "-78.4", "0"),
        ("McMurdo", "166", "-84"),
    ];
    let radii: &[(&str, &str)] = &[
        ("0", "km"),
        ("1", "m"),
        ("200", "km"),
        ("1000", "km"),
        ("3000", "mi"),
        ("10000", "km"),
        ("25000", "km"),
        ("500000", "ft"),
    ];
    for (member, lon, lat) in centers {
        for (r, u) in radii {
            add(&["georadius", "eu", lon, lat, r, u]);
            add(&["georadius_ro", "eu", lon, lat, r, u, "asc"]);
            add(&["georadiusbymember", "eu", member, r, u, "desc"]);
            add(&["georadiusbymember_ro", "eu", member, r, u, "withdist"]);
            add(&["geosearch", "eu", "fromlonlat", lon, lat, "byradius", r, u]);
            add(&[
                "geosearch",
                "eu",
                "frommember",
                member,
                "byradius",
                r,
                u,
                "withcoord",
                "withdist",
                "withhash",
            ]);
            add(&["geosearch", "eu", "fromlonlat", lon, lat, "bybox", r, r, u]);
            add(&[
                "geosearch",
                "eu",
                "frommember",
                member,
                "bybox",
                r,
                "1",
                u,
                "desc",
                "withdist",
            ]);
        }
        for opts in [
            &["count", "3"][..],
            &["count", "3", "desc"],
            &["count", "3", "any"],
            &["count", "3", "any", "asc"],
            &["count", "100"],
            &["count", "1", "any", "withcoord"],
            &["withhash", "withcoord", "asc"],
            &["withdist", "count", "5", "desc"],
        ] {
            let mut c = vec!["georadius", "eu", lon, lat, "5000", "km"];
            c.extend(opts);
            add(&c);
            let mut c = vec![
                "geosearch",
                "eu",
                "frommember",
                member,
                "bybox",
                "8000",
                "6000",
                "km",
            ];
            c.extend(opts);
            add(&c);
        }
    }
    // Big sets (skiplist encoding in Redis) and ties: a grid, many points
    // on one spot, and COUNT cutting through equal distances.
    let mut grid = vec!["geoadd".to_string(), "grid".to_string()];
    for i in 0..20 {
        for j in 0..15 {
            grid.push(format!("{}", -10.0 + f64::from(i) * 0.7));
            grid.push(format!("{}", 35.0 + f64::from(j) * 0.9));
            grid.push(format!("g{i}_{j}"));
        }
    }
    for k in 0..50 {
        grid.push("2.5".into());
        grid.push("44.5".into());
        grid.push(format!("same{k}"));
    }
    let grid_ref: Vec<&str> = grid.iter().map(String::as_str).collect();
    add(&grid_ref);
    for count in [
        "1", "3", "7", "10", "41", "49", "50", "60", "200", "349", "1000",
    ] {
        add(&[
            "geosearch",
            "grid",
            "fromlonlat",
            "2.5",
            "44.5",
            "byradius",
            "300",
            "km",
            "count",
            count,
        ]);
        add(&[
            "geosearch",
            "grid",
            "fromlonlat",
            "2.5",
            "44.5",
            "byradius",
            "300",
            "km",
            "count",
            count,
            "desc",
        ]);
        add(&[
            "geosearch",
            "grid",
            "fromlonlat",
            "2.5",
            "44.5",
            "byradius",
            "300",
            "km",
            "count",
            count,
            "any",
        ]);
        add(&[
            "geosearch",
            "grid",
            "frommember",
            "g5_5",
            "bybox",
            "900",
            "700",
            "km",
            "count",
            count,
        ]);
        add(&[
            "georadius",
            "grid",
            "2.5",
            "44.5",
            "50",
            "km",
            "count",
            count,
            "withdist",
        ]);
    }
    add(&[
        "geosearch",
        "grid",
        "fromlonlat",
        "2.5",
        "44.5",
        "byradius",
        "300",
        "km",
    ]);
    add(&[
        "geosearch",
        "grid",
        "fromlonlat",
        "2.5",
        "44.5",
        "byradius",
        "300",
        "km",
        "asc",
    ]);
    add(&[
        "geosearch",
        "grid",
        "fromlonlat",
        "2.5",
        "44.5",
        "byradius",
        "300",
        "km",
        "desc",
    ]);
    add(&[
        "geosearch",
        "grid",
        "fromlonlat",
        "0",
        "40",
        "bybox",
        "2000",
        "2000",
        "km",
        "withdist",
    ]);
    // Store forms, then the destination read back.
    for c in [
        &["georadius", "eu", "13", "40", "1000", "km", "store", "dst"][..],
        &[
            "georadius",
            "eu",
            "13",
            "40",
            "1000",
            "km",
            "storedist",
            "dst",
        ],
        &[
            "georadius",
            "eu",
            "13",
            "40",
            "1000",
            "mi",
            "count",
            "3",
            "storedist",
            "dst",
        ],
        &[
            "georadius",
            "eu",
            "13",
            "40",
            "1000",
            "km",
            "store",
            "a",
            "storedist",
            "dst",
        ],
        &[
            "georadiusbymember",
            "eu",
            "Rome",
            "800",
            "km",
            "store",
            "dst",
        ],
        &[
            "georadiusbymember",
            "eu",
            "Rome",
            "800",
            "km",
            "desc",
            "count",
            "2",
            "storedist",
            "dst",
        ],
        &[
            "geosearchstore",
            "dst",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "800",
            "km",
        ],
        &[
            "geosearchstore",
            "dst",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "800",
            "km",
            "storedist",
        ],
        &[
            "geosearchstore",
            "dst",
            "eu",
            "fromlonlat",
            "0",
            "0",
            "bybox",
            "20000",
            "20000",
            "km",
            "count",
            "4",
            "storedist",
        ],
        &[
            "geosearchstore",
            "dst",
            "eu",
            "fromlonlat",
            "0",
            "0",
            "bybox",
            "20000",
            "20000",
            "km",
            "count",
            "4",
            "any",
        ],
        &[
            "geosearchstore",
            "dst",
            "grid",
            "fromlonlat",
            "2.5",
            "44.5",
            "byradius",
            "300",
            "km",
            "count",
            "45",
        ],
        &[
            "geosearchstore",
            "eu2",
            "eu",
            "fromlonlat",
            "0",
            "0",
            "byradius",
            "1",
            "m",
        ],
    ] {
        add(c);
        add(&["zrange", "dst", "0", "-1", "withscores"]);
        add(&["type", "dst"]);
    }
    add(&["set", "str", "x"]);
    add(&["expire", "dst", "1000"]);
    add(&["georadius", "eu", "13", "40", "300", "km", "store", "dst"]);
    add(&["ttl", "dst"]);
    add(&["georadius", "eu", "13", "40", "300", "km", "store", "str"]);
    add(&["type", "str"]);
    add(&["set", "str", "x"]);
    add(&["georadius", "eu", "0", "0", "1", "km", "store", "str"]);
    add(&["exists", "str"]);
    add(&["set", "str", "x"]);
    add(&["georadius", "missing", "0", "0", "1", "km", "store", "str"]);
    add(&["exists", "str"]);
    add(&["set", "str", "x"]);
    add(&[
        "geosearchstore",
        "str",
        "missing",
        "frommember",
        "x",
        "byradius",
        "1",
        "km",
    ]);
    add(&["exists", "str"]);
    add(&[
        "georadiusbymember",
        "missing",
        "x",
        "1",
        "km",
        "store",
        "dst",
    ]);
    add(&["exists", "dst"]);
    add(&["georadius", "eu", "13", "40", "1000", "km", "store", "eu"]);
    add(&["zrange", "eu", "0", "-1", "withscores"]);
    add(&all_ref);
    // Missing source keys: answered after parsing.
    add(&["georadius", "missing", "0", "0", "1", "km"]);
    add(&["georadius", "missing", "0", "0", "1", "parsec"]);
    add(&["georadius", "missing", "200", "0", "1", "km"]);
    add(&["georadiusbymember", "missing", "x", "1", "km"]);
    add(&["georadiusbymember", "missing", "x", "-1", "parsec"]);
    add(&["georadiusbymember", "missing", "x", "1", "km", "bogus"]);
    add(&[
        "geosearch",
        "missing",
        "frommember",
        "x",
        "byradius",
        "1",
        "km",
    ]);
    add(&[
        "geosearch",
        "missing",
        "frommember",
        "x",
        "byradius",
        "-1",
        "km",
    ]);
    add(&[
        "geosearch",
        "missing",
        "frommember",
        "x",
        "bybox",
        "1",
        "1",
        "km",
        "any",
    ]);
    // Wrong types.
    add(&["set", "s", "v"]);
    add(&["geoadd", "s", "0", "0", "m"]);
    add(&["geoadd", "s", "200", "0", "m"]);
    add(&["geopos", "s", "m"]);
    add(&["geohash", "s", "m"]);
    add(&["geodist", "s", "a", "b"]);
    add(&["geodist", "s", "a", "b", "parsec"]);
    add(&["georadius", "s", "0", "0", "1", "km"]);
    add(&["georadius", "s", "200", "0", "1", "km"]);
    add(&["georadius_ro", "s", "0", "0", "1", "km"]);
    add(&["georadiusbymember", "s", "m", "1", "km"]);
    add(&["georadiusbymember_ro", "s", "m", "1", "km"]);
    add(&["geosearch", "s", "frommember", "m", "byradius", "1", "km"]);
    add(&[
        "geosearchstore",
        "d",
        "s",
        "frommember",
        "m",
        "byradius",
        "1",
        "km",
    ]);
    add(&[
        "geosearchstore",
        "s",
        "eu",
        "frommember",
        "Rome",
        "byradius",
        "1",
        "km",
    ]);
    add(&["type", "s"]);
    // Every error of the search commands.
    for c in [
        &["georadius", "eu", "0", "0", "x", "km"][..],
        &["georadius", "eu", "0", "0", "-1", "km"],
        &["georadius", "eu", "0", "0", "1", "parsec"],
        &["georadius", "eu", "x", "0", "1", "km"],
        &["georadius", "eu", "0", "90", "1", "km"],
        &["georadius", "eu", "0", "0", "1", "km", "count"],
        &["georadius", "eu", "0", "0", "1", "km", "count", "0"],
        &["georadius", "eu", "0", "0", "1", "km", "count", "-3"],
        &["georadius", "eu", "0", "0", "1", "km", "count", "x"],
        &["georadius", "eu", "0", "0", "1", "km", "count", "1.5"],
        &["georadius", "eu", "0", "0", "1", "km", "any"],
        &["georadius", "eu", "0", "0", "1", "km", "store"],
        &["georadius", "eu", "0", "0", "1", "km", "storedist"],
        &[
            "georadius",
            "eu",
            "0",
            "0",
            "1",
            "km",
            "store",
            "d",
            "withdist",
        ],
        &[
            "georadius",
            "eu",
            "0",
            "0",
            "1",
            "km",
            "withhash",
            "storedist",
            "d",
        ],
        &["georadius", "eu", "0", "0", "1", "km", "frommember", "Rome"],
        &["georadius", "eu", "0", "0", "1", "km", "bogus"],
        &["georadius_ro", "eu", "0", "0", "1", "km", "store", "d"],
        &["georadius_ro", "eu", "0", "0", "1", "km", "storedist", "d"],
        &["georadiusbymember", "eu", "absent", "1", "km"],
        &["georadiusbymember", "eu", "Rome", "1", "yards"],
        &[
            "georadiusbymember",
            "eu",
            "Rome",
            "1",
            "km",
            "byradius",
            "1",
            "km",
        ],
        &[
            "georadiusbymember_ro",
            "eu",
            "Rome",
            "1",
            "km",
            "store",
            "d",
        ],
        &["geosearch", "eu", "byradius", "1", "km"],
        &["geosearch", "eu", "frommember", "Rome", "count", "1"],
        &["GeoSearch", "eu", "bybox", "1", "1", "km", "asc"],
        &["GEOSEARCH", "eu", "fromlonlat", "0", "0", "withdist", "asc"],
        &[
            "geosearch",
            "eu",
            "frommember",
            "absent",
            "byradius",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "fromlonlat",
            "0",
            "0",
            "byradius",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "fromlonlat",
            "0",
            "0",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "frommember",
            "Paris",
            "byradius",
            "1000",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "bybox",
            "1",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "1",
            "1",
            "km",
            "byradius",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "byradius",
            "300",
            "mi",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "x",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "1",
            "y",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "-1",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "1",
            "-1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "bybox",
            "1",
            "1",
            "au",
        ],
        &["geosearch", "eu", "frommember", "Rome", "bybox", "1", "1"],
        &["geosearch", "eu", "frommember", "Rome", "byradius", "1"],
        &["geosearch", "eu", "fromlonlat", "0", "byradius", "1", "km"],
        &[
            "geosearch",
            "eu",
            "fromlonlat",
            "0",
            "91",
            "byradius",
            "1",
            "km",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "store",
            "d",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "storedist",
        ],
        &[
            "geosearch",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "any",
        ],
        &[
            "geosearchstore",
            "d",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "withcoord",
        ],
        &[
            "geosearchstore",
            "d",
            "eu",
            "frommember",
            "Rome",
            "byradius",
            "1",
            "km",
            "store",
            "x",
        ],
        &[
            "geosearchstore",
            "d",
            "eu",
            "frommember",
            "Rome",
            "byradius",
        ],
        &[
            "geosearchstore",
            "d",
            "eu",
            "byradius",
            "1",
            "km",
            "withdist",
        ],
        &["georadius", "eu", "0", "0", "1"],
        &["georadiusbymember", "eu", "Rome", "1"],
        &["geosearch", "eu", "frommember", "Rome"],
        &[
            "geosearchstore",
            "d",
            "eu",
            "frommember",
            "Rome",
            "byradius",
        ],
        &["geoadd", "eu", "0", "0"],
        &["geodist", "eu", "a"],
        &["geopos"],
        &["geohash"],
    ] {
        add(c);
    }
    // The key table: sources and destinations.
    add(&[
        "command",
        "getkeys",
        "georadius",
        "k",
        "0",
        "0",
        "1",
        "km",
        "store",
        "d",
    ]);
    add(&[
        "command",
        "getkeys",
        "georadius",
        "k",
        "0",
        "0",
        "1",
        "km",
        "storedist",
        "d",
    ]);
    add(&[
        "command",
        "getkeys",
        "georadiusbymember",
        "k",
        "m",
        "1",
        "km",
        "store",
        "d",
    ]);
    add(&[
        "command",
        "getkeys",
        "georadius_ro",
        "k",
        "0",
        "0",
        "1",
        "km",
    ]);
    add(&[
        "command",
        "getkeys",
        "geosearchstore",
        "d",
        "k",
        "frommember",
        "m",
        "byradius",
        "1",
        "km",
    ]);
    add(&["command", "getkeys", "geoadd", "k", "0", "0", "m"]);
    // RESP3: coordinates as doubles with the same text.
    add(&["hello", "3"]);
    add(&["geopos", "edge", "sw", "ne", "zero", "absent"]);
    add(&["geopos", "eu", "Palermo", "Sydney"]);
    add(&[
        "geosearch",
        "eu",
        "frommember",
        "Rome",
        "byradius",
        "800",
        "km",
        "withcoord",
        "withdist",
        "withhash",
        "asc",
    ]);
    add(&[
        "georadius",
        "eu",
        "13",
        "40",
        "1000",
        "km",
        "withcoord",
        "count",
        "2",
        "desc",
    ]);
    add(&["geodist", "eu", "Palermo", "Catania"]);
    add(&["geodist", "eu", "Palermo", "absent"]);
    add(&["geohash", "eu", "Palermo", "absent"]);
    add(&["geopos", "missing", "a"]);
    add(&["hello", "2"]);
    s
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn geo_commands_match_redis_byte_for_byte() {
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let real = common::RealRedis::start(dir.path(), &["--appendonly", "no"]);
    let mut ours = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut theirs = std::net::TcpStream::connect(("127.0.0.1", real.port)).unwrap();
    for t in [&ours, &theirs] {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let script = script();
    let mut mismatches = Vec::new();
    for args in &script {
        let a = exchange(&mut ours, args);
        let b = exchange(&mut theirs, args);
        // HELLO's client id differs by how many connections each saw.
        if a != b && args[0] != "hello" {
            mismatches.push(format!(
                "{args:?}\n  ours:   {:?}\n  theirs: {:?}",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} replies differ:\n{}",
        mismatches.len(),
        script.len(),
        mismatches.join("\n")
    );
    assert!(script.len() > 900, "{} commands compared", script.len());
    // COMMAND INFO: name, arity, flags and the legacy key triple.
    let names = [
        "geoadd",
        "geodist",
        "geohash",
        "geopos",
        "georadius",
        "georadius_ro",
        "georadiusbymember",
        "georadiusbymember_ro",
        "geosearch",
        "geosearchstore",
    ];
    let mut info = cmd(&["command", "info"]);
    info.extend(names.iter().map(|n| n.to_string()));
    let head = |reply: Vec<u8>| -> Vec<Vec<bytes::Bytes>> {
        let all = slotway::resp::scan::array_elements(&reply.into()).unwrap();
        all.iter()
            .map(|e| {
                let fields = slotway::resp::scan::array_elements(e).unwrap();
                fields.into_iter().take(6).collect()
            })
            .collect()
    };
    let (a, b) = (
        head(exchange(&mut ours, &info)),
        head(exchange(&mut theirs, &info)),
    );
    assert_eq!(a.len(), names.len());
    assert_eq!(a, b, "COMMAND INFO of the geo commands");
}
