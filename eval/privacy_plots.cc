#include "eval/privacy_plots.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace silo::eval {
namespace {

// 5×7 glyphs, rows top to bottom, '#' lit.
const std::map<char, std::array<const char*, 7>>& Glyphs() {
  static const auto* glyphs = new std::map<char, std::array<const char*, 7>>{
      {'a', {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}},
      {'b', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "####."}},
      {'c', {".....", ".....", ".####", "#....", "#....", "#....", ".####"}},
      {'d', {"....#", "....#", ".####", "#...#", "#...#", "#...#", ".####"}},
      {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}},
      {'f', {"..##.", ".#...", "###..", ".#...", ".#...", ".#...", ".#..."}},
      {'g', {".....", ".####", "#...#", "#...#", ".####", "....#", ".###."}},
      {'h', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "#...#"}},
      {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
      {'j', {"...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."}},
      {'k', {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}},
      {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'m', {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"}},
      {'n', {".....", ".....", "####.", "#...#", "#...#", "#...#", "#...#"}},
      {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
      {'p', {".....", "####.", "#...#", "#...#", "####.", "#....", "#...."}},
      {'q', {".....", ".####", "#...#", "#...#", ".####", "....#", "....#"}},
      {'r', {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}},
      {'s', {".....", ".....", ".####", "#....", ".###.", "....#", "####."}},
      {'t', {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}},
      {'u', {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
      {'v', {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
      {'w', {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}},
      {'x', {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},
      {'y', {".....", "#...#", "#...#", "#...#", ".####", "....#", ".###."}},
      {'z', {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"}},
      {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
      {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
      {'3', {"####.", "....#", "....#", ".###.", "....#", "....#", "####."}},
      {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
      {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
      {'6', {".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."}},
      {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
      {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
      {'9', {".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."}},
      {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
      {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
      {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
      {'%', {"##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"}},
      {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
      {'@', {".###.", "#...#", "#.###", "#.#.#", "#.###", "#....", ".####"}},
      {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
      {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
      {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
      {'/', {"....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."}},
      {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
      {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
      {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
  };
  return *glyphs;
}

uint32_t Crc32(std::string_view bytes) {
  static const auto* table = [] {
    auto* t = new std::array<uint32_t, 256>();
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      (*t)[n] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (const char b : bytes) crc = (*table)[(crc ^ static_cast<uint8_t>(b)) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

void PutU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void Chunk(std::string& png, std::string_view type, std::string_view data) {
  PutU32(png, static_cast<uint32_t>(data.size()));
  std::string body(type);
  body.append(data);
  png.append(body);
  PutU32(png, Crc32(body));
}

constexpr std::array<uint32_t, 6> kPalette = {0xd62728, 0x1f77b4, 0x2ca02c,
                                              0xff7f0e, 0x9467bd, 0x8c564b};

double Percent(int64_t part, int64_t whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

std::string Label(const AttackResult& attack) {
  return StrCat(attack.attack, " (", attack.target, ")");
}

}  // namespace

Canvas::Canvas(int32_t width, int32_t height)
    : width_(width), height_(height), pixels_(static_cast<size_t>(width) * height * 3, 0xff) {}

void Canvas::Fill(int32_t x, int32_t y, int32_t w, int32_t h, uint32_t rgb) {
  for (int32_t j = std::max(0, y); j < std::min(height_, y + h); ++j) {
    for (int32_t i = std::max(0, x); i < std::min(width_, x + w); ++i) {
      uint8_t* p = &pixels_[(static_cast<size_t>(j) * width_ + i) * 3];
      p[0] = static_cast<uint8_t>(rgb >> 16);
      p[1] = static_cast<uint8_t>(rgb >> 8);
      p[2] = static_cast<uint8_t>(rgb);
    }
  }
}

void Canvas::Line(int32_t x0, int32_t y0, int32_t x1, int32_t y1, uint32_t rgb) {
  const int32_t steps = std::max({std::abs(x1 - x0), std::abs(y1 - y0), 1});
  for (int32_t s = 0; s <= steps; ++s) {
    Fill(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps, 1, 1, rgb);
  }
}

void Canvas::Text(int32_t x, int32_t y, std::string_view text, uint32_t rgb) {
  for (const char raw : text) {
    const char c = (raw >= 'A' && raw <= 'Z') ? static_cast<char>(raw - 'A' + 'a') : raw;
    const auto found = Glyphs().find(c);
    for (int32_t row = 0; row < 7; ++row) {
      for (int32_t col = 0; col < 5; ++col) {
        const bool lit = found == Glyphs().end()
                             ? (row == 0 || row == 6 || col == 0 || col == 4)
                             : found->second[static_cast<size_t>(row)][col] == '#';
        if (lit) Fill(x + col, y + row, 1, 1, rgb);
      }
    }
    x += 6;
  }
}

std::string Canvas::EncodePng() const {
  std::string raw;  // filter byte 0, then the row
  for (int32_t j = 0; j < height_; ++j) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(&pixels_[static_cast<size_t>(j) * width_ * 3]),
               static_cast<size_t>(width_) * 3);
  }
  std::string zlib = {'\x78', '\x01'};
  for (size_t at = 0; at < raw.size() || at == 0; at += 65535) {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    zlib.push_back(at + n >= raw.size() ? '\x01' : '\x00');
    zlib.push_back(static_cast<char>(n & 0xff));
    zlib.push_back(static_cast<char>(n >> 8));
    zlib.push_back(static_cast<char>(~n & 0xff));
    zlib.push_back(static_cast<char>((~n >> 8) & 0xff));
    zlib.append(raw, at, n);
    if (raw.empty()) break;
  }
  uint32_t a = 1, b = 0;
  for (const char c : raw) {
    a = (a + static_cast<uint8_t>(c)) % 65521;
    b = (b + a) % 65521;
  }
  PutU32(zlib, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string header;
  PutU32(header, static_cast<uint32_t>(width_));
  PutU32(header, static_cast<uint32_t>(height_));
  header.append({'\x08', '\x02', '\x00', '\x00', '\x00'});  // 8-bit RGB
  Chunk(png, "IHDR", header);
  Chunk(png, "IDAT", zlib);
  Chunk(png, "IEND", "");
  return png;
}

absl::Status WritePrivacyPlots(const PrivacyEvalResult& result, const std::string& out_dir) {
  namespace fs = std::filesystem;
  // Attacks in order of first appearance, one color each.
  std::vector<std::string> attacks;
  for (const SettingResult& setting : result.settings) {
    for (const AttackResult& attack : setting.attacks) {
      if (std::find(attacks.begin(), attacks.end(), Label(attack)) == attacks.end()) {
        attacks.push_back(Label(attack));
      }
    }
  }
  const auto color = [&](const std::string& label) {
    const size_t i =
        static_cast<size_t>(std::find(attacks.begin(), attacks.end(), label) - attacks.begin());
    return kPalette[i % kPalette.size()];
  };

  // recovery.png: one band per setting, one bar per attack; a black tick marks chance.
  constexpr int32_t kLeft = 330, kBarWidth = 500, kBar = 6;
  const int32_t legend = 20 + 10 * static_cast<int32_t>(attacks.size());
  const int32_t band = kBar * static_cast<int32_t>(attacks.size()) + 10;
  const int32_t height = legend + 30 + band * static_cast<int32_t>(result.settings.size()) + 20;
  Canvas recovery(kLeft + kBarWidth + 40, height);
  recovery.Text(10, 6, "top-1 tokens recovered (%), chance marked black", 0x000000);
  for (size_t a = 0; a < attacks.size(); ++a) {
    const int32_t y = 20 + 10 * static_cast<int32_t>(a);
    recovery.Fill(kLeft, y, 20, 7, color(attacks[a]));
    recovery.Text(kLeft + 26, y, attacks[a], 0x000000);
  }
  const int32_t top = legend + 20;
  for (int32_t tick = 0; tick <= 100; tick += 25) {
    const int32_t x = kLeft + kBarWidth * tick / 100;
    recovery.Line(x, top - 4, x, height - 20, 0xcccccc);
    recovery.Text(x - 6, top - 14, StrCat(tick), 0x000000);
  }
  for (size_t s = 0; s < result.settings.size(); ++s) {
    const SettingResult& setting = result.settings[s];
    const int32_t y = top + band * static_cast<int32_t>(s);
    recovery.Text(8, y + band / 2 - 4, setting.setting.name, 0x000000);
    for (const AttackResult& attack : setting.attacks) {
      const auto a = static_cast<int32_t>(std::find(attacks.begin(), attacks.end(), Label(attack)) -
                                          attacks.begin());
      const int32_t bar_y = y + 4 + a * kBar;
      const double recovered = Percent(attack.recovered.top1, attack.recovered.n);
      recovery.Fill(kLeft, bar_y, static_cast<int32_t>(kBarWidth * recovered / 100), kBar - 1,
                    color(Label(attack)));
      const auto chance_x = static_cast<int32_t>(
          kLeft + kBarWidth * Percent(attack.chance.top1, attack.chance.n) / 100);
      recovery.Fill(chance_x, bar_y - 1, 2, kBar + 1, 0x000000);
    }
    recovery.Line(0, y + band - 2, kLeft + kBarWidth + 40, y + band - 2, 0xeeeeee);
  }

  // frontier.png: x = perplexity cost (%), y = strongest attack's top-1 excess over chance.
  std::vector<const SettingResult*> measured;
  for (const SettingResult& setting : result.settings) {
    if (setting.perplexity >= 0) measured.push_back(&setting);
  }
  constexpr int32_t kPlot = 400, kMargin = 60;
  const int32_t list_height = 12 * static_cast<int32_t>(measured.size()) + 20;
  Canvas frontier(kMargin * 2 + kPlot + 330, std::max(kPlot + 2 * kMargin, list_height + 40));
  frontier.Text(
      10, 8,
      "privacy-utility frontier: strongest controlled attack top-1 minus chance (points) vs "
      "perplexity cost (%, gains at 0)",
      0x000000);
  double max_cost = 1.0;
  for (const SettingResult* setting : measured) {
    max_cost = std::max(max_cost, 100 * (setting->perplexity / setting->reference_perplexity - 1));
  }
  const int32_t x0 = kMargin, y0 = kMargin + kPlot;
  frontier.Line(x0, y0, x0 + kPlot, y0, 0x000000);
  frontier.Line(x0, y0, x0, y0 - kPlot, 0x000000);
  for (int32_t tick = 0; tick <= 4; ++tick) {
    frontier.Text(x0 - 30, y0 - kPlot * tick / 4 - 3, StrCat(25 * tick), 0x000000);
    frontier.Text(x0 + kPlot * tick / 4 - 10, y0 + 8, absl::StrFormat("%.1f", max_cost * tick / 4),
                  0x000000);
  }
  for (size_t i = 0; i < measured.size(); ++i) {
    const SettingResult& setting = *measured[i];
    double excess = 0;
    for (const AttackResult& attack : setting.attacks) {
      if (!IsControlledByPrivacySettings(attack)) continue;
      excess = std::max(excess, Percent(attack.recovered.top1, attack.recovered.n) -
                                    Percent(attack.chance.top1, attack.chance.n));
    }
    const double cost =
        std::max(0.0, 100 * (setting.perplexity / setting.reference_perplexity - 1));
    const auto x = static_cast<int32_t>(x0 + kPlot * cost / max_cost);
    const auto y = static_cast<int32_t>(y0 - kPlot * std::clamp(excess, 0.0, 100.0) / 100);
    const uint32_t rgb = setting.setting.name == result.chosen_default ? 0xd62728 : 0x1f77b4;
    frontier.Fill(x - 2, y - 2, 5, 5, rgb);
    frontier.Text(x + 4, y - 8, StrCat(i + 1), rgb);
    frontier.Text(kMargin * 2 + kPlot, 30 + 12 * static_cast<int32_t>(i),
                  StrCat(i + 1, " ", setting.setting.name), rgb);
  }

  for (const auto& [name, canvas] :
       {std::pair<const char*, const Canvas*>{"recovery.png", &recovery},
        std::pair<const char*, const Canvas*>{"frontier.png", &frontier}}) {
    std::ofstream file(fs::path(out_dir) / name, std::ios::binary);
    file << canvas->EncodePng();
    if (!file) return absl::InternalError(StrCat("cannot write ", out_dir, "/", name));
  }
  return absl::OkStatus();
}

}  // namespace silo::eval
