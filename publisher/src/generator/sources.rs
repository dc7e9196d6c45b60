//! The builders of fresh events: the shape both sources share (id, source, stage, type,
//! times), then each source's user and engagement. The draws happen in a fixed order;
//! reordering them would change every seeded run.

use super::Generator;
use super::event::{Data, Engagement, Event, FacebookUser, Millis, Tagged, User};
use super::fixtures::{
    ADS_PER_CAMPAIGN, BROWSERS, CAMPAIGNS, CLICK_POSITIONS, FACEBOOK_DEVICES, FACEBOOK_USERS,
    ITEMS, REFERRERS, TIKTOK_DEVICES, TIKTOK_USERS, TiktokProfile, country, type_weight,
};
use super::random::{pick, price, skewed, watch, weighted, weighted_index};
use rand::Rng;
use rand::rngs::StdRng;
use shared_events::{FunnelStage, Source, event_types};
use time::{Duration, OffsetDateTime};

/// What a source's builder needs to know of the event it completes.
struct Shape {
    stage: FunnelStage,
    event_type: &'static str,
    action_time: Millis,
}

impl Generator {
    /// A new valid event that happened at `timestamp`.
    pub(super) fn fresh_event(&mut self, timestamp: OffsetDateTime) -> Event {
        let rng = &mut self.rng;
        let mut uuid_bytes = [0u8; 16];
        rng.fill(&mut uuid_bytes);
        let event_id = uuid::Builder::from_random_bytes(uuid_bytes).into_uuid();
        let source = if rng.random_bool(0.55) {
            Source::Facebook
        } else {
            Source::Tiktok
        };
        let stage = if rng.random_bool(0.8) {
            FunnelStage::Top
        } else {
            FunnelStage::Bottom
        };
        let types = event_types(source, stage);
        let event_type = types[weighted_index(rng, types.iter().map(|t| type_weight(source, t)))];
        let action_time = Millis(timestamp - Duration::milliseconds(rng.random_range(0..500)));
        let shape = Shape {
            stage,
            event_type,
            action_time,
        };
        let (user, engagement) = match source {
            Source::Facebook => facebook(rng, &self.facebook_users, &shape),
            Source::Tiktok => tiktok(rng, &self.tiktok_users, &shape),
        };
        Event {
            event_id,
            timestamp: Millis(timestamp),
            source,
            funnel_stage: stage,
            event_type,
            data: Data { user, engagement },
        }
    }
}

/// A Facebook user of the pool and the engagement of the event's stage.
fn facebook(rng: &mut StdRng, users: &[FacebookUser], shape: &Shape) -> (User, Engagement) {
    let user = users[skewed(rng, FACEBOOK_USERS) as usize];
    let engagement = if shape.stage == FunnelStage::Top {
        let has_video = shape.event_type == "video.view"
            || (shape.event_type == "ad.view" && rng.random_bool(0.4));
        Engagement::FacebookTop {
            action_time: shape.action_time,
            referrer: weighted(rng, REFERRERS),
            video_id: has_video.then(|| Tagged("v-", rng.random_range(1..50_000))),
        }
    } else {
        let campaign = 1 + skewed(rng, CAMPAIGNS);
        let paid = shape.event_type == "checkout.complete" && rng.random_bool(0.95);
        Engagement::FacebookBottom {
            ad_id: Tagged(
                "ad-",
                campaign * 100 + rng.random_range(1..=ADS_PER_CAMPAIGN),
            ),
            campaign_id: Tagged("cmp-", campaign),
            click_position: weighted(rng, CLICK_POSITIONS),
            device: weighted(rng, FACEBOOK_DEVICES),
            browser: weighted(rng, BROWSERS),
            purchase_amount: paid.then(|| price(rng)),
        }
    };
    (User::Facebook(user), engagement)
}

/// A TikTok user of the pool and the engagement of the event's stage.
fn tiktok(rng: &mut StdRng, users: &[TiktokProfile], shape: &Shape) -> (User, Engagement) {
    let profile = users[skewed(rng, TIKTOK_USERS) as usize];
    let engagement = if shape.stage == FunnelStage::Top {
        let (watch_time, percentage_watched) = watch(rng);
        Engagement::TiktokTop {
            watch_time,
            percentage_watched,
            device: weighted(rng, TIKTOK_DEVICES),
            // Mostly at home, sometimes travelling.
            country: if rng.random_bool(0.95) {
                profile.home
            } else {
                country(rng).0
            },
            video_id: Tagged("v-", rng.random_range(1..50_000)),
        }
    } else {
        let purchase = shape.event_type == "purchase";
        let profile_id = (!purchase || rng.random_bool(0.3))
            .then(|| Tagged("tt-p-", rng.random_range(1..2_000)));
        let paid = purchase && rng.random_bool(0.95);
        Engagement::TiktokBottom {
            action_time: shape.action_time,
            profile_id,
            purchased_item: purchase.then(|| pick(rng, ITEMS)),
            purchase_amount: paid.then(|| price(rng)),
        }
    };
    (User::Tiktok(profile.user), engagement)
}
