//! A transition record on the wire (inside a pack's manifest).

use super::{Attendance, Ks2Results, TransitionRecord};
use crate::api::v1;

impl From<TransitionRecord> for v1::TransitionRecord {
    fn from(r: TransitionRecord) -> Self {
        Self {
            upn: r.upn,
            former_upn: r.former_upn,
            surname: r.surname,
            forename: r.forename,
            middle_names: r.middle_names,
            preferred_forename: r.preferred_forename,
            dob: r.dob,
            sex: r.sex,
            ethnicity: r.ethnicity,
            first_language: r.first_language,
            fsm: r.fsm,
            medical_flag: r.medical_flag,
            sen_provision: r.sen_provision,
            sen_needs: r.sen_needs,
            attendance: r.attendance.map(|a| v1::Attendance {
                year: a.year,
                possible: a.possible,
                attended: a.attended,
                authorised: a.authorised,
                unauthorised: a.unauthorised,
            }),
            ks2: r.ks2.map(|k| v1::Ks2Results {
                reading: k.reading,
                maths: k.maths,
                gps: k.gps,
                writing_ta: k.writing_ta,
                mtc: k.mtc,
            }),
            safeguarding_file: r.safeguarding_file,
            notes: r.notes,
        }
    }
}

impl From<v1::TransitionRecord> for TransitionRecord {
    fn from(r: v1::TransitionRecord) -> Self {
        Self {
            upn: r.upn,
            former_upn: r.former_upn,
            surname: r.surname,
            forename: r.forename,
            middle_names: r.middle_names,
            preferred_forename: r.preferred_forename,
            dob: r.dob,
            sex: r.sex,
            ethnicity: r.ethnicity,
            first_language: r.first_language,
            fsm: r.fsm,
            medical_flag: r.medical_flag,
            sen_provision: r.sen_provision,
            sen_needs: r.sen_needs,
            attendance: r.attendance.map(|a| Attendance {
                year: a.year,
                possible: a.possible,
                attended: a.attended,
                authorised: a.authorised,
                unauthorised: a.unauthorised,
            }),
            ks2: r.ks2.map(|k| Ks2Results {
                reading: k.reading,
                maths: k.maths,
                gps: k.gps,
                writing_ta: k.writing_ta,
                mtc: k.mtc,
            }),
            safeguarding_file: r.safeguarding_file,
            notes: r.notes,
        }
    }
}
