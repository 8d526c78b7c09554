// The compute node's ScrambledAttentionService over real mTLS: every partial it returns equals
// attention computed directly (in double) over the block the owner uploaded, for F32, F16 and I8
// on the wire; who may do what; malformed, repeated, early and out-of-order messages; close and
// expiry free the session.
#include "node/scrambled_attention_service.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/half.h"
#include "crypto/mtls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

constexpr int kHeadDim = 64;
const std::string kSession = "session-0123abcd";

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(30);
}

// A block as the test keeps it: the values the service must use (after the wire's rounding).
struct Block {
  int rows = 0;
  std::vector<float> k, v;  // [rows, kHeadDim]
};

// [rows, kHeadDim] of `dtype`, and the values it stands for.
v1::Tensor Encode(const std::vector<float>& values, int rows, v1::DType dtype,
                  std::vector<float>* exact) {
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  tensor.add_shape(rows);
  tensor.add_shape(kHeadDim);
  exact->resize(values.size());
  std::string& data = *tensor.mutable_data();
  if (dtype == v1::DTYPE_F32) {
    data.assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    *exact = values;
  } else if (dtype == v1::DTYPE_F16) {
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t half = FloatToHalf(values[i]);
      data.push_back(static_cast<char>(half & 0xff));
      data.push_back(static_cast<char>(half >> 8));
      (*exact)[i] = HalfToFloat(half);
    }
  } else {  // I8 with a scale per row
    for (int r = 0; r < rows; ++r) {
      float top = 0;
      for (int c = 0; c < kHeadDim; ++c) top = std::max(top, std::abs(values[r * kHeadDim + c]));
      const float scale = top > 0 ? top / 127.0F : 1.0F;
      tensor.add_row_scales(scale);
      for (int c = 0; c < kHeadDim; ++c) {
        const auto q = static_cast<int8_t>(std::lround(values[r * kHeadDim + c] / scale));
        data.push_back(static_cast<char>(q));
        (*exact)[r * kHeadDim + c] = static_cast<float>(q) * scale;
      }
    }
  }
  return tensor;
}

class ScrambledAttentionServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(silo::testing::MakeDevCertificates(
                  dir_.path(), {"institution/querier", "institution/owner-a", "institution/owner-b",
                                "institution/stranger", "compute/c1"})
                  .status());
    ScrambledAttentionLimits limits;
    limits.max_session_kv_bytes = int64_t{64} << 20;
    service_ = std::make_unique<ScrambledAttentionService>(limits);
    ASSERT_OK_AND_ASSIGN(server_,
                         silo::testing::StartDevServer(dir_.path(), "c1", {service_.get()}));
  }

  std::unique_ptr<v1::ScrambledAttentionService::Stub> Stub(const std::string& id) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(dir_.path(), id, server_.address);
    EXPECT_OK(channel.status());
    return v1::ScrambledAttentionService::NewStub(*channel);
  }

  // Layers 1 and 2 of 3 delegated, 2 KV heads; owner-a has keys of 5 and 17 rows, owner-b one
  // of 33.
  static v1::OpenSessionRequest Layout(v1::DType dtype) {
    v1::OpenSessionRequest request;
    request.mutable_session()->set_value(kSession);
    request.set_n_layers(3);
    request.set_first_layer(1);
    request.set_n_kv_heads(2);
    request.set_head_dim(kHeadDim);
    request.set_kv_dtype(dtype);
    request.set_scale(0.2F);
    v1::OwnerSlot* a = request.add_owners();
    a->set_node_id("owner-a");
    a->add_key_rows(5);
    a->add_key_rows(17);
    v1::OwnerSlot* b = request.add_owners();
    b->set_node_id("owner-b");
    b->add_key_rows(33);
    return request;
  }

  grpc::Status Open(const v1::OpenSessionRequest& request, const std::string& as = "querier") {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::OpenSessionResponse response;
    return Stub(as)->OpenSession(&context, request, &response);
  }

  grpc::Status Upload(const std::string& owner,
                      const std::vector<v1::UploadScrambledKvRequest>& messages) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::UploadScrambledKvResponse response;
    auto writer = Stub(owner)->UploadScrambledKv(&context, &response);
    for (const v1::UploadScrambledKvRequest& message : messages) {
      if (!writer->Write(message)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Every block of `owner` (index in Layout) with random values; remembered in blocks_.
  std::vector<v1::UploadScrambledKvRequest> Blocks(int owner, v1::DType dtype) {
    const std::vector<int> key_rows = owner == 0 ? std::vector<int>{5, 17} : std::vector<int>{33};
    std::normal_distribution<float> normal(0.0F, 1.0F);
    std::vector<v1::UploadScrambledKvRequest> messages;
    for (uint32_t layer = 1; layer < 3; ++layer) {
      for (uint32_t head = 0; head < 2; ++head) {
        for (uint32_t key = 0; key < key_rows.size(); ++key) {
          const int rows = key_rows[key];
          std::vector<float> k(static_cast<size_t>(rows) * kHeadDim);
          std::vector<float> v(k.size());
          for (float& x : k) x = normal(rng_);
          for (float& x : v) x = normal(rng_);
          v1::UploadScrambledKvRequest& message = messages.emplace_back();
          message.mutable_session()->set_value(kSession);
          message.set_layer(layer);
          message.set_kv_head(head);
          message.set_key_index(key);
          Block& block = blocks_[{owner, layer, head, key}];
          block.rows = rows;
          *message.mutable_k() = Encode(k, rows, dtype, &block.k);
          *message.mutable_v() = Encode(v, rows, dtype, &block.v);
        }
      }
    }
    return messages;
  }

  // Attention of `q` ([n_rows, kHeadDim]) over a block, in double.
  static void Reference(const std::vector<float>& q, const Block& block, float scale,
                        std::vector<float>* m, std::vector<float>* l, std::vector<float>* o) {
    const size_t n_rows = q.size() / kHeadDim;
    m->assign(n_rows, 0);
    l->assign(n_rows, 0);
    o->assign(q.size(), 0);
    for (size_t r = 0; r < n_rows; ++r) {
      std::vector<double> s(static_cast<size_t>(block.rows));
      double top = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < block.rows; ++j) {
        double dot = 0;
        for (int c = 0; c < kHeadDim; ++c) {
          dot += static_cast<double>(q[r * kHeadDim + c]) * block.k[j * kHeadDim + c];
        }
        s[static_cast<size_t>(j)] = dot * scale;
        top = std::max(top, s[static_cast<size_t>(j)]);
      }
      double sum = 0;
      std::vector<double> acc(kHeadDim, 0.0);
      for (int j = 0; j < block.rows; ++j) {
        const double w = std::exp(s[static_cast<size_t>(j)] - top);
        sum += w;
        for (int c = 0; c < kHeadDim; ++c) acc[c] += w * block.v[j * kHeadDim + c];
      }
      (*m)[r] = static_cast<float>(top);
      (*l)[r] = static_cast<float>(sum);
      for (int c = 0; c < kHeadDim; ++c) (*o)[r * kHeadDim + c] = static_cast<float>(acc[c] / sum);
    }
  }

  static std::vector<float> Floats(const v1::Tensor& tensor) {
    std::vector<float> values(tensor.data().size() / 4);
    std::memcpy(values.data(), tensor.data().data(), tensor.data().size());
    return values;
  }

  v1::HeadQuery Query(uint32_t owner, uint32_t head, uint32_t key, int n_rows,
                      std::vector<float>* q) {
    std::normal_distribution<float> normal(0.0F, 1.0F);
    q->resize(static_cast<size_t>(n_rows) * kHeadDim);
    for (float& x : *q) x = normal(rng_);
    v1::HeadQuery query;
    query.set_owner_index(owner);
    query.set_kv_head(head);
    query.set_key_index(key);
    v1::Tensor& tensor = *query.mutable_q();
    tensor.set_dtype(v1::DTYPE_F32);
    tensor.add_shape(n_rows);
    tensor.add_shape(kHeadDim);
    tensor.set_data(std::string(reinterpret_cast<const char*>(q->data()), q->size() * 4));
    return query;
  }

  silo::testing::TempDir dir_;
  std::unique_ptr<ScrambledAttentionService> service_;
  silo::testing::DevServer server_;
  std::mt19937 rng_{20261130};
  std::map<std::tuple<int, uint32_t, uint32_t, uint32_t>, Block> blocks_;
};

TEST_F(ScrambledAttentionServiceTest, PartialsEqualAttentionOverTheUploadedBlocks) {
  for (const v1::DType dtype : {v1::DTYPE_F32, v1::DTYPE_F16, v1::DTYPE_I8}) {
    SCOPED_TRACE(v1::DType_Name(dtype));
    blocks_.clear();
    ASSERT_TRUE(Open(Layout(dtype)).ok());
    ASSERT_TRUE(Upload("owner-a", Blocks(0, dtype)).ok());
    ASSERT_TRUE(Upload("owner-b", Blocks(1, dtype)).ok());

    grpc::ClientContext context;
    auto stream = Stub("querier")->Attend(&context);
    for (const auto& [step, layer] :
         std::vector<std::pair<uint32_t, uint32_t>>{{0, 1}, {0, 2}, {1, 1}, {1, 2}}) {
      v1::AttendRequest request;
      if (step == 0 && layer == 1) request.mutable_session()->set_value(kSession);
      request.set_step(step);
      request.set_layer(layer);
      std::vector<std::vector<float>> queries;
      std::vector<std::tuple<int, uint32_t, uint32_t>> names;
      for (const auto& [owner, head, key] : std::vector<std::tuple<int, uint32_t, uint32_t>>{
               {0, 0, 0}, {0, 1, 1}, {1, 0, 0}, {1, 1, 0}, {0, 0, 1}}) {
        *request.add_queries() =
            Query(owner, head, key, step == 0 ? 7 : 4, &queries.emplace_back());
        names.emplace_back(owner, head, key);
      }
      ASSERT_TRUE(stream->Write(request));
      v1::AttendResponse response;
      ASSERT_TRUE(stream->Read(&response));
      EXPECT_EQ(response.step(), step);
      EXPECT_EQ(response.layer(), layer);
      ASSERT_EQ(response.partials_size(), static_cast<int>(queries.size()));
      for (size_t i = 0; i < queries.size(); ++i) {
        const auto& [owner, head, key] = names[i];
        const v1::AttentionPartial& partial = response.partials(static_cast<int>(i));
        EXPECT_EQ(partial.owner_index(), static_cast<uint32_t>(owner));
        EXPECT_EQ(partial.kv_head(), head);
        EXPECT_EQ(partial.key_index(), key);
        std::vector<float> m, l, o;
        Reference(queries[i], blocks_.at({owner, layer, head, key}), 0.2F, &m, &l, &o);
        const std::vector<float> got_m = Floats(partial.m());
        const std::vector<float> got_l = Floats(partial.l());
        const std::vector<float> got_o = Floats(partial.o());
        ASSERT_EQ(got_o.size(), o.size());
        for (size_t r = 0; r < m.size(); ++r) {
          EXPECT_NEAR(got_m[r], m[r], 1e-4 * std::max(1.0F, std::abs(m[r])));
          EXPECT_NEAR(got_l[r], l[r], 1e-4 * l[r]);
        }
        for (size_t c = 0; c < o.size(); ++c) EXPECT_NEAR(got_o[c], o[c], 1e-4);
      }
    }
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    grpc::ClientContext close_context;
    v1::CloseSessionRequest close;
    close.mutable_session()->set_value(kSession);
    v1::CloseSessionResponse closed;
    ASSERT_TRUE(Stub("querier")->CloseSession(&close_context, close, &closed).ok());
    EXPECT_GT(closed.freed_bytes(), 0);
    EXPECT_EQ(service_->n_sessions(), 0);
  }
}

TEST_F(ScrambledAttentionServiceTest, RefusesBadLayoutsStrangersAndRepeats) {
  v1::OpenSessionRequest bad = Layout(v1::DTYPE_F16);
  bad.set_head_dim(513);
  EXPECT_EQ(Open(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = Layout(v1::DTYPE_F16);
  bad.set_first_layer(3);
  EXPECT_EQ(Open(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = Layout(v1::DTYPE_I32);
  EXPECT_EQ(Open(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = Layout(v1::DTYPE_F16);
  bad.mutable_owners(1)->set_node_id("owner-a");
  EXPECT_EQ(Open(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = Layout(v1::DTYPE_F32);
  bad.mutable_owners(0)->set_key_rows(0, 65536);
  bad.set_n_kv_heads(64);
  EXPECT_EQ(Open(bad).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Open(Layout(v1::DTYPE_F16), "c1").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  ASSERT_TRUE(Open(Layout(v1::DTYPE_F16)).ok());
  EXPECT_EQ(Open(Layout(v1::DTYPE_F16)).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  std::vector<v1::UploadScrambledKvRequest> blocks = Blocks(0, v1::DTYPE_F16);
  EXPECT_EQ(Upload("stranger", {blocks[0]}).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Upload("owner-b", {blocks[1]}).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << "owner-b has no key 1";

  // Attending before every block is there.
  {
    grpc::ClientContext context;
    auto stream = Stub("querier")->Attend(&context);
    v1::AttendRequest request;
    request.mutable_session()->set_value(kSession);
    request.set_layer(1);
    stream->Write(request);
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }

  const auto spoiled = [&](const std::function<void(v1::UploadScrambledKvRequest&)>& spoil) {
    v1::UploadScrambledKvRequest message = blocks[0];
    spoil(message);
    return Upload("owner-a", {message}).error_code();
  };
  EXPECT_EQ(spoiled([](auto& m) { m.mutable_k()->set_shape(0, 6); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(spoiled([](auto& m) { m.mutable_v()->mutable_data()->pop_back(); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(spoiled([](auto& m) { m.mutable_k()->set_dtype(v1::DTYPE_F32); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(spoiled([](auto& m) {
              (*m.mutable_v()->mutable_data())[3] = static_cast<char>(0x7c);  // f16 Inf/NaN
              (*m.mutable_v()->mutable_data())[2] = static_cast<char>(0x01);
            }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(spoiled([](auto& m) { m.set_layer(0); }), grpc::StatusCode::INVALID_ARGUMENT)
      << "layer 0 is not delegated";
  EXPECT_EQ(spoiled([](auto& m) { m.mutable_session()->set_value("unknown-session!"); }),
            grpc::StatusCode::NOT_FOUND);

  ASSERT_TRUE(Upload("owner-a", blocks).ok());
  EXPECT_EQ(Upload("owner-a", {blocks[2]}).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << "uploaded twice";
  ASSERT_TRUE(Upload("owner-b", Blocks(1, v1::DTYPE_F16)).ok());

  // The owner may not attend; the querier's (step, layer) must increase; queries are checked.
  {
    grpc::ClientContext context;
    auto stream = Stub("owner-a")->Attend(&context);
    v1::AttendRequest request;
    request.mutable_session()->set_value(kSession);
    request.set_layer(1);
    stream->Write(request);
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  const auto attend = [&](const std::vector<v1::AttendRequest>& requests) {
    grpc::ClientContext context;
    auto stream = Stub("querier")->Attend(&context);
    for (const v1::AttendRequest& request : requests) {
      stream->Write(request);
      v1::AttendResponse response;
      if (!stream->Read(&response)) break;
    }
    stream->WritesDone();
    return stream->Finish().error_code();
  };
  v1::AttendRequest first;
  first.mutable_session()->set_value(kSession);
  first.set_step(5);
  first.set_layer(2);
  std::vector<float> q;
  *first.add_queries() = Query(0, 1, 1, 2, &q);
  EXPECT_EQ(attend({first}), grpc::StatusCode::OK);
  EXPECT_EQ(attend({first}), grpc::StatusCode::INVALID_ARGUMENT) << "a replay of (5, 2)";
  v1::AttendRequest next = first;
  next.set_step(6);
  next.mutable_queries(0)->set_key_index(2);
  EXPECT_EQ(attend({next}), grpc::StatusCode::INVALID_ARGUMENT) << "no key 2";
  next = first;
  next.set_step(7);
  float nan = std::numeric_limits<float>::quiet_NaN();
  next.mutable_queries(0)->mutable_q()->mutable_data()->replace(0, 4, reinterpret_cast<char*>(&nan),
                                                                4);
  EXPECT_EQ(attend({next}), grpc::StatusCode::INVALID_ARGUMENT) << "NaN";
  next = first;
  next.set_step(8);
  next.set_layer(0);
  EXPECT_EQ(attend({next}), grpc::StatusCode::INVALID_ARGUMENT) << "layer 0 is not delegated";
}

TEST_F(ScrambledAttentionServiceTest, AnIdleSessionExpires) {
  v1::OpenSessionRequest request = Layout(v1::DTYPE_F16);
  request.set_ttl_ns(absl::ToInt64Nanoseconds(absl::Milliseconds(50)));
  ASSERT_TRUE(Open(request).ok());
  EXPECT_EQ(service_->n_sessions(), 1);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (service_->n_sessions() > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(service_->n_sessions(), 0);
  EXPECT_EQ(Upload("owner-a", Blocks(0, v1::DTYPE_F16)).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace silo::node
