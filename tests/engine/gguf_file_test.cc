#include "engine/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/gguf_writer.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::engine {
namespace {

using ::silo::testing::GgufWriter;
using ::silo::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kF32 = static_cast<uint32_t>(GgmlType::kF32);
constexpr uint32_t kQ8_0 = static_cast<uint32_t>(GgmlType::kQ8_0);

std::span<const uint8_t> Bytes(const std::string& data) {
  return {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
}

std::string F32Data(const std::vector<float>& values) {
  std::string data(values.size() * sizeof(float), '\0');
  std::memcpy(data.data(), values.data(), data.size());
  return data;
}

GgufWriter SmallModel() {
  GgufWriter writer;
  writer.AddString("general.architecture", "llama");
  writer.AddUint32("llama.block_count", 2);
  writer.AddFloat32("llama.rope.freq_base", 10000.0f);
  writer.AddBool("tokenizer.ggml.add_bos_token", true);
  writer.AddInt32("llama.signed", -3);
  writer.AddStringArray("tokenizer.ggml.tokens", {"<s>", "a", "b"});
  writer.AddTensor("norm.weight", {4}, kF32, F32Data({1, 2, 3, 4}));
  writer.AddTensor("blk.0.w", {32, 2}, kQ8_0, std::string(size_t{2} * 34, '\x07'));
  return writer;
}

TEST(GgufFile, ReadsMetadataAndTensors) {
  const std::string data = SmallModel().Build();
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Parse(Bytes(data), "small.gguf"));
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_EQ(file.data_offset() % 32, 0u);

  ASSERT_OK_AND_ASSIGN(const std::string_view arch, file.GetString("general.architecture"));
  EXPECT_EQ(arch, "llama");
  ASSERT_OK_AND_ASSIGN(const uint64_t blocks, file.GetUint64("llama.block_count"));
  EXPECT_EQ(blocks, 2u);
  ASSERT_OK_AND_ASSIGN(const double theta, file.GetFloat("llama.rope.freq_base"));
  EXPECT_EQ(theta, 10000.0);
  ASSERT_OK_AND_ASSIGN(const bool add_bos, file.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_TRUE(add_bos);
  ASSERT_OK_AND_ASSIGN(const int64_t negative, file.GetInt64("llama.signed"));
  EXPECT_EQ(negative, -3);
  ASSERT_OK_AND_ASSIGN(const GgufArray* tokens, file.GetArray("tokenizer.ggml.tokens"));
  EXPECT_EQ(tokens->element_type, GgufValueType::kString);
  ASSERT_EQ(tokens->values.size(), 3u);
  EXPECT_EQ(std::get<std::string>(tokens->values[1]), "a");

  ASSERT_EQ(file.tensors().size(), 2u);
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* norm, file.FindTensor("norm.weight"));
  EXPECT_THAT(norm->dims, ElementsAre(4));
  EXPECT_EQ(norm->type, GgmlType::kF32);
  EXPECT_EQ(norm->n_bytes, 16u);
  float values[4];
  std::memcpy(values, file.TensorBytes(*norm).data(), sizeof(values));
  EXPECT_THAT(values, ElementsAre(1, 2, 3, 4));
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* w, file.FindTensor("blk.0.w"));
  EXPECT_EQ(w->n_elements, 64);
  EXPECT_EQ(w->n_bytes, 68u);
  EXPECT_EQ(w->offset % 32, 0u);
  EXPECT_EQ(file.TensorBytes(*w)[67], 7);
}

TEST(GgufFile, TypedLookupsReportMissingKeysAndWrongTypes) {
  const std::string data = SmallModel().Build();
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Parse(Bytes(data), "small.gguf"));
  EXPECT_THAT(file.GetString("general.name"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("general.name")));
  EXPECT_THAT(file.GetUint64("general.architecture"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-negative integer")));
  EXPECT_THAT(file.GetUint64("llama.signed"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(file.FindTensor("output.weight"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(GgufFile, HonoursACustomAlignment) {
  GgufWriter writer(/*version=*/2, /*alignment=*/64);
  writer.AddTensor("a", {3}, kF32, F32Data({1, 2, 3}));
  writer.AddTensor("b", {1}, kF32, F32Data({5}));
  const std::string data = writer.Build();
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Parse(Bytes(data), "aligned.gguf"));
  EXPECT_EQ(file.version(), 2u);
  EXPECT_EQ(file.alignment(), 64u);
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* b, file.FindTensor("b"));
  EXPECT_EQ(b->offset % 64, 0u);
  float value = 0;
  std::memcpy(&value, file.TensorBytes(*b).data(), sizeof(value));
  EXPECT_EQ(value, 5.0f);
}

// Every prefix of a valid file is an error, never a crash or an out-of-bounds read (the test
// runs under the sanitizers in the fuzzing build as well).
TEST(GgufFile, EveryTruncationIsAnError) {
  const std::string data = SmallModel().Build();
  ASSERT_OK_AND_ASSIGN(const GgufFile whole, GgufFile::Parse(Bytes(data), "whole.gguf"));
  uint64_t data_end = 0;  // bytes after it are padding
  for (const GgufTensorInfo& tensor : whole.tensors()) {
    data_end = std::max(data_end, tensor.offset + tensor.n_bytes);
  }
  for (size_t size = 0; size < data_end; ++size) {
    const std::string prefix = data.substr(0, size);
    const absl::StatusOr<GgufFile> file = GgufFile::Parse(Bytes(prefix), "cut.gguf");
    ASSERT_FALSE(file.ok()) << "prefix of " << size << " bytes parsed";
    EXPECT_THAT(file.status().code(),
                AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kInvalidArgument))
        << file.status();
  }
}

// Overwrites the bytes at `offset` of a copy of `data`.
template <typename T>
std::string Patched(std::string data, size_t offset, T value) {
  std::memcpy(data.data() + offset, &value, sizeof(T));
  return data;
}

TEST(GgufFile, RejectsBadHeaders) {
  const std::string data = SmallModel().Build();
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint32_t>(data, 0, 0x12345678)), "m.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint32_t>(data, 4, 1)), "v.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 1")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, 8, uint64_t{1} << 60)), "t.gguf"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tensor entries")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, 16, ~uint64_t{0})), "k.gguf"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("metadata entries")));
}

TEST(GgufFile, RejectsHostileMetadata) {
  {
    GgufWriter writer;
    writer.AddUint32("x", 1);
    writer.AddUint32("x", 2);
    const std::string data = writer.Build();
    EXPECT_THAT(GgufFile::Parse(Bytes(data), "dup.gguf"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'x' appears twice")));
  }
  {
    GgufWriter writer;
    writer.AddUint32("x", 1);
    // Header 24 bytes, key length 8 + "x" 1, then the value type.
    const std::string data = Patched<uint32_t>(writer.Build(), 33, 99);
    EXPECT_THAT(GgufFile::Parse(Bytes(data), "type.gguf"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown type 99")));
  }
  {
    GgufWriter writer;
    writer.AddStringArray("a", {"x"});
    // Header 24, key 9, value type 4, element type 4, then the element count.
    const std::string data = Patched<uint64_t>(writer.Build(), 41, uint64_t{1} << 62);
    EXPECT_THAT(GgufFile::Parse(Bytes(data), "array.gguf"),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("array of")));
  }
  {
    GgufWriter writer;
    writer.AddString("s", "abc");
    const std::string data = Patched<uint64_t>(writer.Build(), 37, ~uint64_t{0});
    EXPECT_THAT(GgufFile::Parse(Bytes(data), "string.gguf"),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  }
  {
    GgufWriter writer;
    writer.AddUint32("general.alignment", 48);
    const std::string data = writer.Build();
    EXPECT_THAT(GgufFile::Parse(Bytes(data), "align.gguf"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("power of two")));
  }
}

TEST(GgufFile, LimitsTheNumberOfMetadataValues) {
  GgufWriter writer;
  writer.AddInt32Array("big", std::vector<int32_t>(GgufFile::kMaxMetadataValues + 1, 0));
  const std::string data = writer.Build();
  EXPECT_THAT(GgufFile::Parse(Bytes(data), "big.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metadata values")));
}

// Offsets into the single tensor entry of a one-tensor file named "t" with `n_dims` dims.
struct TensorEntry {
  size_t dims, type, offset;
};
TensorEntry EntryOf(uint32_t n_dims) {
  const size_t start = 24 + 8 + 1 + 4;  // header, name length, "t", n_dims
  return {start, start + size_t{8} * n_dims, start + size_t{8} * n_dims + 4};
}

TEST(GgufFile, RejectsHostileTensors) {
  GgufWriter writer;
  writer.AddTensor("t", {32, 2}, kQ8_0, std::string(68, '\0'));
  const std::string data = writer.Build();
  const TensorEntry entry = EntryOf(2);
  ASSERT_OK(GgufFile::Parse(Bytes(data), "ok.gguf"));

  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint32_t>(data, entry.type, 77)), "a.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown tensor type 77")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.dims, 33)), "b.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a multiple of 32")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.dims + 8, 0)), "c.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dimension 0")));
  EXPECT_THAT(
      GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.dims + 8, uint64_t{1} << 62)), "d.gguf"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too many elements")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.dims + 8, 3)), "e.gguf"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("past the end")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.offset, 8)), "f.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("alignment")));
  EXPECT_THAT(
      GgufFile::Parse(Bytes(Patched<uint64_t>(data, entry.offset, ~uint64_t{31})), "g.gguf"),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("past the end")));
  EXPECT_THAT(GgufFile::Parse(Bytes(Patched<uint32_t>(data, 24 + 9, 5)), "h.gguf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 dimensions")));
}

TEST(GgufFile, OpenMapsTheFileAndReportsMissingOnes) {
  silo::testing::TempDir dir;
  const std::string path = dir.WriteFile("small.gguf", SmallModel().Build());
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Open(path));
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* norm, file.FindTensor("norm.weight"));
  EXPECT_EQ(file.TensorBytes(*norm).size(), 16u);
  EXPECT_THAT(GgufFile::Open(path + ".missing"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GgufFile::Open(dir.path().string()), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string empty = dir.WriteFile("empty.gguf", "");
  EXPECT_THAT(GgufFile::Open(empty), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace silo::engine
