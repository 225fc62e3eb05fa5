import Foundation
import Testing

/// The trade-off curve: `plan --frontier` predicts it, `bench --frontier` measures it.
@Suite("The memory / time trade-off curve")
struct FrontierTests {
    /// Along the budget plans, less memory never costs less predicted time, and the smallest
    /// feasible budget and none's peak bound the curve.
    @Test func planPredictsTheCurve() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(["plan", "--model", "resnet20", "--batch", "8", "--frontier", "--json"], folder: folder)
        #expect(r.status == 0, "\(r.stderr)")
        let points = r.json
        let none = try #require(points.first { $0["policy"] as? String == "none" }, "\(r.stdout)")
        let nonePeak = try #require(none["predicted_peak_activation_mib"] as? Double)
        let budgets = points.filter { ($0["policy"] as? String)?.hasPrefix("budget") == true }
        #expect(budgets.count >= 2, "\(r.stdout)")
        let curve = budgets.map { ($0["predicted_peak_activation_mib"] as! Double, $0["predicted_extra_ms"] as! Double) }
            .sorted { $0.0 < $1.0 }
        for (a, b) in zip(curve, curve.dropFirst()) {
            #expect(a.1 >= b.1 && a.0 <= nonePeak, "\(curve)")
        }
        for name in ["selective", "sqrt(n)"] { #expect(points.contains { $0["policy"] as? String == name }, "\(name)") }
        let bad = try remat(["plan", "--frontier", "--policy", "sqrt"], folder: folder)
        #expect(bad.status == 64 && bad.stderr.contains("--frontier"), "\(bad.stderr)")
    }

    /// bench --frontier runs every point with the fields a plotting script needs, and --plot
    /// writes an SVG with the named policies labelled.
    @Test func benchMeasuresAndPlotsTheCurve() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let peer = #"{"who": "PyTorch checkpoint_sequential", "label": "none", "peak_activation_mib": 1.5, "step_ms": 9.25}"#
        try (peer + "\n").write(to: folder.appendingPathComponent("torch.jsonl"), atomically: true, encoding: .utf8)
        let r = try remat(["bench", "--model", "lenet5", "--batch", "8", "--frontier", "--steps", "1", "--warmup", "0",
                           "--json", "--plot", "curve.svg", "--peer-points", "torch.jsonl"], folder: folder)
        #expect(r.status == 0, "\(r.stderr)")
        for row in r.json {
            for field in ["policy", "overlap", "peak_activation_mib", "step_ms", "overhead"] {
                #expect(row[field] != nil, "\(field) missing: \(row)")
            }
        }
        #expect(r.json.contains { $0["policy"] as? String == "none" && ($0["overhead"] as? Double) == 0 }, "\(r.stdout)")
        let svg = try String(contentsOf: folder.appendingPathComponent("curve.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains(">none<") && svg.contains(">sqrt(n)<") && svg.contains("predicted"), "\(svg.prefix(400))")
        #expect(svg.components(separatedBy: "<circle").count - 1 >= r.json.count, "a mark for every measured point and prediction")
        #expect(svg.components(separatedBy: "fill=\"#2ca02c\"").count - 1 == 2 && svg.contains(">PyTorch checkpoint_sequential<"),
                "the peer's point and its legend")
        // with overlap, a budget only per-block choices can hold runs without it (resnet56 at
        // batch 4: its smallest plans rebuild segments into minimal stashes, which only the
        // backward thread runs)
        let both = try remat(["bench", "--model", "resnet56", "--batch", "4", "--frontier", "--overlap", "both", "--steps", "1",
                              "--warmup", "0", "--json"], folder: folder)
        #expect(both.status == 0 && both.json.contains { $0["overlap"] as? Bool == true }, "\(both.stderr)")
        // a peer file that is not one JSON object a line is refused before any step runs
        try "{\"who\": \"x\"}\n".write(to: folder.appendingPathComponent("bad.jsonl"), atomically: true, encoding: .utf8)
        for (file, plot) in [("bad.jsonl", true), ("missing.jsonl", true), ("torch.jsonl", false)] {
            let bad = try remat(["bench", "--model", "lenet5", "--frontier", "--peer-points", file] + (plot ? ["--plot", "c.svg"] : []),
                                folder: folder)
            #expect(bad.status == 64 && bad.stderr.contains("--peer-points"), "\(file): \(bad.stderr)")
        }
    }
}
