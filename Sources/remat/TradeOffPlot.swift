import Foundation

/// Step time against peak activation memory as an SVG scatter plot: measured points (overlap
/// off and on) and the plans' predictions, the named policies labelled.
struct TradeOffPlot {
    enum Kind { case measured, overlapped, predicted, peer }
    struct Point {
        var mebibytes: Double, milliseconds: Double
        var kind: Kind
        var label: String?
    }
    var title: String
    var points: [Point]
    /// Who the peer points are from, for the legend (nil: none drawn).
    var peer: String? = nil

    /// Only these policies are labelled: the budget plans between them would crowd the plot.
    static let labelled: Set<String> = ["none", "minimal", "lean", "selective", "sqrt(n)"]

    var svg: String {
        let (width, height) = (760.0, 480.0), (left, right, top, bottom) = (70.0, 170.0, 40.0, 50.0)
        let xs = points.map(\.mebibytes), ys = points.map(\.milliseconds)
        let xStep = TradeOffPlot.roundStep((xs.max() ?? 1) / 5)
        let xMax = ((xs.max() ?? 1) / xStep).rounded(.up) * xStep
        let yStep = TradeOffPlot.roundStep(max((ys.max() ?? 1) - (ys.min() ?? 0), 1) / 5)
        let yMin = ((ys.min() ?? 0) / yStep).rounded(.down) * yStep
        let yMax = max(((ys.max() ?? 1) / yStep).rounded(.up) * yStep, yMin + yStep)
        func x(_ v: Double) -> Double { left + v / xMax * (width - left - right) }
        func y(_ v: Double) -> Double { height - bottom - (v - yMin) / (yMax - yMin) * (height - top - bottom) }
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="22" font-size="14">\(escape(title))</text>
            <line x1="\(left)" y1="\(height - bottom)" x2="\(width - right)" y2="\(height - bottom)" stroke="black"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(height - bottom)" stroke="black"/>
            <text x="\((left + width - right) / 2)" y="\(height - 12)" text-anchor="middle">peak activation memory (MiB)</text>
            <text transform="translate(18 \((top + height - bottom) / 2)) rotate(-90)" text-anchor="middle">step time (ms)</text>

            """
        for vx in stride(from: 0, through: xMax + xStep / 2, by: xStep) {
            out += "<line x1=\"\(x(vx))\" y1=\"\(height - bottom)\" x2=\"\(x(vx))\" y2=\"\(height - bottom + 5)\" stroke=\"black\"/>"
            out += "<text x=\"\(x(vx))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(String(format: "%g", vx))</text>\n"
        }
        for vy in stride(from: yMin, through: yMax + yStep / 2, by: yStep) {
            out += "<line x1=\"\(left - 5)\" y1=\"\(y(vy))\" x2=\"\(left)\" y2=\"\(y(vy))\" stroke=\"black\"/>"
            out += "<text x=\"\(left - 8)\" y=\"\(y(vy) + 4)\" text-anchor=\"end\">\(String(format: "%g", vy))</text>\n"
        }
        for p in points {
            let (cx, cy) = (x(p.mebibytes), y(p.milliseconds))
            switch p.kind {
            case .measured: out += "<circle cx=\"\(cx)\" cy=\"\(cy)\" r=\"5\" fill=\"#1f77b4\"/>"
            case .overlapped: out += "<rect x=\"\(cx - 4)\" y=\"\(cy - 4)\" width=\"8\" height=\"8\" fill=\"#ff7f0e\"/>"
            case .predicted: out += "<circle cx=\"\(cx)\" cy=\"\(cy)\" r=\"5\" fill=\"none\" stroke=\"#555\"/>"
            case .peer: out += "<path d=\"M \(cx) \(cy - 6) L \(cx + 5) \(cy + 4) L \(cx - 5) \(cy + 4) Z\" fill=\"#2ca02c\"/>"
            }
            if let label = p.label, TradeOffPlot.labelled.contains(label) {
                out += "<text x=\"\(cx + 8)\" y=\"\(cy - 6)\">\(escape(label))</text>"
            }
            out += "\n"
        }
        var legend: [(String, String)] = [
            ("<circle cx=\"0\" cy=\"0\" r=\"5\" fill=\"#1f77b4\"/>", "measured"),
            ("<rect x=\"-4\" y=\"-4\" width=\"8\" height=\"8\" fill=\"#ff7f0e\"/>", "measured, overlapped"),
            ("<circle cx=\"0\" cy=\"0\" r=\"5\" fill=\"none\" stroke=\"#555\"/>", "predicted"),
        ]
        if let peer { legend.append(("<path d=\"M 0 -6 L 5 4 L -5 4 Z\" fill=\"#2ca02c\"/>", escape(peer))) }
        for (k, (mark, name)) in legend.enumerated() {
            let ly = top + 10 + 20 * Double(k)
            out += "<g transform=\"translate(\(width - right + 20) \(ly))\">\(mark)<text x=\"10\" y=\"4\">\(name)</text></g>\n"
        }
        return out + "</svg>\n"
    }

    /// 1, 2 or 5 times a power of ten, at least `raw`: tick steps a reader can add up.
    static func roundStep(_ raw: Double) -> Double {
        let power = pow(10, (log10(max(raw, 1e-9))).rounded(.down))
        return [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw } ?? 10 * power
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
