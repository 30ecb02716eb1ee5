//! The full check of a pupil's values before it is sent: the record mapped
//! from a `<Pupil>` goes through [`TransitionRecord::problems`], the one
//! check `record.json` and the class spreadsheet also pass through, and each
//! problem is named by the CTF element the value was read from.

use super::{CtfProblem, CtfPupil};
#[cfg(doc)]
use crate::record::TransitionRecord;

impl CtfPupil {
    /// Checks every mapped value with [`TransitionRecord::problems`], the
    /// check `record.json` and the class spreadsheet pass through, so a
    /// pupil that passes here is a `record.json` the receiver accepts: sex
    /// M, F or U; ethnicity, language and SEN codes of capital letters and
    /// digits; a real date of birth, not in the future nor more than 30
    /// years ago; SEN provision N, K or E; attendance sessions that add up;
    /// KS2 scores in range. Each problem found is added, named by the
    /// element the value was read from (e.g. `Sex`, or `Gender` in an older
    /// file) and its line, unless reading already reported that element.
    /// Messages never repeat the value. `today` bounds the date of birth;
    /// calling `check` again adds nothing new.
    pub fn check(&mut self, today: time::Date) {
        for p in self.record.problems(today) {
            let (element, line) = self
                .places
                .of(&p.field)
                .map_or((p.field.as_str(), self.line), |(e, l)| (e, l));
            let nested = |a: &str, b: &str| {
                a.strip_prefix(b)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            if self
                .problems
                .iter()
                .any(|q| nested(&q.element, element) || nested(element, &q.element))
            {
                continue;
            }
            let problem = CtfProblem {
                pupil: self.position,
                line,
                element: element.to_string(),
                problem: p.problem,
            };
            self.problems.push(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TransitionRecord;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    fn today() -> time::Date {
        time::macros::date!(2026 - 07 - 20)
    }

    /// A valid pupil with every mapped element, one per line (line 1 is
    /// `<Pupil>`).
    const GOOD: &str = "<Pupil>
  <UPN>H801200001001</UPN>
  <Surname>Secretname</Surname>
  <Forename>Zoë</Forename>
  <DOB>2015-01-12</DOB>
  <Sex>F</Sex>
  <BasicDetails>
    <Ethnicity>WBRI</Ethnicity>
    <Languages><Type><LanguageType>F</LanguageType><Language>ENG</Language></Type></Languages>
  </BasicDetails>
  <SENhistory><SEN><StartDate>2023-09-01</StartDate><SENprovision>K</SENprovision>
    <SENneeds><SENneed><Type>SLCN</Type><TypeRank>1</TypeRank></SENneed></SENneeds></SEN></SENhistory>
  <Attendance><YearData><Year>2025</Year><SessionsPossible>380</SessionsPossible><SessionsAttended>370</SessionsAttended><SessionsAuthorised>8</SessionsAuthorised><SessionsUnauthorised>2</SessionsUnauthorised></YearData></Attendance>
  <StageAssessments><KeyStage><Stage>KS2</Stage>
    <StageAssessment><Year>2026</Year><Component>RD</Component><Result>104</Result></StageAssessment>
    <StageAssessment><Year>2026</Year><Component>WRI</Component><Result>EXS</Result></StageAssessment>
    <StageAssessment><Year>2026</Year><Component>MTC</Component><Result>21</Result></StageAssessment>
  </KeyStage></StageAssessments>
</Pupil>";

    /// The problems of `GOOD` with `from` replaced by `to`, after `check`.
    fn problems_with(from: &str, to: &str) -> Vec<String> {
        assert!(GOOD.contains(from), "{from}");
        let mut pupil = CtfPupil::from_xml(&GOOD.replacen(from, to, 1), 3).unwrap();
        pupil.check(today());
        let shown: Vec<String> = pupil.problems.iter().map(ToString::to_string).collect();
        for p in &shown {
            assert!(
                !p.contains("Secretname") && !p.contains("801200001001"),
                "{p}"
            );
        }
        shown
    }

    #[test]
    fn a_valid_pupil_has_no_problems() {
        assert_eq!(
            problems_with("<Sex>F</Sex>", "<Sex>F</Sex>"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ctf_sex_male_is_refused_naming_the_element_and_line() {
        assert_eq!(
            problems_with("<Sex>F</Sex>", "<Sex>Male</Sex>"),
            ["pupil 3, line 6, element Sex: must be M, F or U"]
        );
        // Codes are not upper-cased: the receiving MIS imports the XML as
        // it is.
        assert_eq!(
            problems_with("<Sex>F</Sex>", "<Sex>f</Sex>"),
            ["pupil 3, line 6, element Sex: must be M, F or U"]
        );
        assert_eq!(
            problems_with("<Sex>F</Sex>", "<Gender>Male</Gender>"),
            ["pupil 3, line 6, element Gender: must be M, F or U"]
        );
        assert_eq!(
            problems_with("  <Sex>F</Sex>\n", ""),
            ["pupil 3, line 1, element Sex: required (M, F or U)"]
        );
    }

    #[test]
    fn ctf_ethnicity_and_language_codes_with_punctuation_are_refused() {
        assert_eq!(
            problems_with("WBRI", "W-BRI"),
            [
                "pupil 3, line 8, element BasicDetails/Ethnicity: must be a DfE code of letters and digits (e.g. WBRI, ENG)"
            ]
        );
        assert_eq!(
            problems_with("<Language>ENG", "<Language>eng"),
            [
                "pupil 3, line 9, element BasicDetails/Languages/Type/Language: must be a DfE code of letters and digits (e.g. WBRI, ENG)"
            ]
        );
    }

    #[test]
    fn ctf_sen_values_are_checked() {
        assert_eq!(
            problems_with("<SENprovision>K", "<SENprovision>S"),
            [
                "pupil 3, line 11, element SENhistory/SEN/SENprovision: must be N (none), K (SEN support) or E (EHC plan)"
            ]
        );
        assert_eq!(
            problems_with("<Type>SLCN", "<Type>S/LCN"),
            [
                "pupil 3, line 12, element SENhistory/SEN/SENneeds: each need must be a DfE code such as ASD or SLCN"
            ]
        );
    }

    #[test]
    fn ctf_attendance_must_add_up() {
        assert_eq!(
            problems_with("<SessionsAttended>370", "<SessionsAttended>400"),
            [
                "pupil 3, line 13, element Attendance/YearData: attended + authorised + unauthorised is more than possible sessions"
            ]
        );
        assert_eq!(
            problems_with("<Year>2025", "<Year>1999"),
            ["pupil 3, line 13, element Attendance/YearData/Year: must be a year such as 2025"]
        );
        // A number that is not one is reported once, by the reader, not
        // again as sessions that do not add up.
        assert_eq!(
            problems_with("<SessionsPossible>380", "<SessionsPossible>lots"),
            [
                "pupil 3, line 13, element Attendance/YearData/SessionsPossible: must be a whole number"
            ]
        );
    }

    #[test]
    fn ctf_ks2_results_name_their_component() {
        assert_eq!(
            problems_with("<Result>104", "<Result>150"),
            [
                "pupil 3, line 15, element StageAssessments/KeyStage/StageAssessment[Component=RD]/Result: a scaled score is between 80 and 120"
            ]
        );
        assert_eq!(
            problems_with("<Result>EXS", "<Result>exs"),
            [
                "pupil 3, line 16, element StageAssessments/KeyStage/StageAssessment[Component=WRI]/Result: must be a teacher assessment code such as WTS, EXS or GDS"
            ]
        );
        assert_eq!(
            problems_with("<Result>21", "<Result>30"),
            [
                "pupil 3, line 17, element StageAssessments/KeyStage/StageAssessment[Component=MTC]/Result: the multiplication tables check scores 0 to 25"
            ]
        );
    }

    #[test]
    fn ctf_dates_are_real_and_bounded() {
        assert_eq!(
            problems_with("2015-01-12", "2015-02-30"),
            ["pupil 3, line 5, element DOB: not a real date (check the day and the month)"]
        );
        assert_eq!(
            problems_with("2015-01-12", "28/07/2015"),
            [
                "pupil 3, line 5, element DOB: looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)"
            ]
        );
        assert_eq!(
            problems_with("2015-01-12", "2027-01-12"),
            ["pupil 3, line 5, element DOB: is in the future"]
        );
    }

    #[test]
    fn ctf_former_upn_the_same_as_the_upn_is_refused() {
        assert_eq!(
            problems_with(
                "<Ethnicity>",
                "<FormerUPN>H801200001001</FormerUPN><Ethnicity>"
            ),
            ["pupil 3, line 8, element BasicDetails/FormerUPN: is the same as upn"]
        );
    }

    #[test]
    fn check_twice_adds_nothing() {
        let mut pupil = CtfPupil::from_xml(&GOOD.replace("WBRI", "W-BRI"), 1).unwrap();
        pupil.check(today());
        let once = pupil.problems.clone();
        pupil.check(today());
        assert_eq!(pupil.problems, once);
        assert_eq!(once.len(), 1);
    }

    /// Mostly a good value, sometimes a bad one, sometimes no element.
    fn value(
        good: &'static [&'static str],
        bad: &'static [&'static str],
    ) -> impl Strategy<Value = Option<String>> {
        let pick = |values: &'static [&'static str]| {
            proptest::sample::select(values).prop_map(|v| Some(v.to_string()))
        };
        prop_oneof![16 => pick(good), 1 => pick(bad), 1 => Just(None)]
    }

    prop_compose! {
        /// A `<Pupil>` whose every mapped element is absent, valid or one of
        /// the mistakes seen in real exports.
        fn pupil_xml()(
            upn in value(&["H801200001001", "L861200119003"], &["Z801200001001", "nonsense"]),
            dob in value(&["2015-01-12", "2014-09-01"], &["2015-02-30", "28/07/2015", "2027-01-01", "1980-01-01", "2015-07-28 00:00"]),
            sex in value(&["M", "F", "U"], &["Male", "f", "X", ""]),
            gender in any::<bool>(),
            ethnicity in value(&["WBRI", "AIND", "REFU"], &["W-BRI", "wbri", "WHITEBRITISH", "W BRI"]),
            language in value(&["ENG", "PAN"], &["eng", "EN-GB"]),
            provision in value(&["N", "K", "E", ""], &["S", "SEN", "k"]),
            need in value(&["SLCN", "ASD"], &["S/LCN", "", "asd"]),
            year in value(&["2025", "2024"], &["1999", "lots"]),
            possible in value(&["380"], &["lots", "-1", "0"]),
            attended in value(&["370", "0"], &["400", "9999999999"]),
            reading in value(&["80", "104", "120", "A"], &["79", "150"]),
            writing in value(&["EXS", "GDS", ""], &["exs", "EXPECTED"]),
            mtc in value(&["0", "25"], &["26"]),
        ) -> String {
            let mut xml = String::from("<Pupil>\n<Surname>Secretname</Surname><Forename>Zoë</Forename>\n");
            let mut element = |name: &str, value: &Option<String>| {
                if let Some(v) = value {
                    xml.push_str(&format!("<{name}>{v}</{name}>\n"));
                }
            };
            element("UPN", &upn);
            element("DOB", &dob);
            element(if gender { "Gender" } else { "Sex" }, &sex);
            xml.push_str("<BasicDetails>");
            let inner = |name: &str, value: &Option<String>| {
                value.as_ref().map(|v| format!("<{name}>{v}</{name}>")).unwrap_or_default()
            };
            let ethnicity = inner("Ethnicity", &ethnicity);
            let language = inner("Language", &language);
            xml.push_str(&format!("{ethnicity}<Languages><Type><LanguageType>F</LanguageType>{language}</Type></Languages></BasicDetails>\n"));
            let provision = inner("SENprovision", &provision);
            let need = inner("Type", &need);
            xml.push_str(&format!("<SENhistory><SEN><StartDate>2023-09-01</StartDate>{provision}<SENneeds><SENneed>{need}</SENneed></SENneeds></SEN></SENhistory>\n"));
            let year = inner("Year", &year);
            let possible = inner("SessionsPossible", &possible);
            let attended = inner("SessionsAttended", &attended);
            xml.push_str(&format!("<Attendance><YearData>{year}{possible}{attended}</YearData></Attendance>\n"));
            let reading = inner("Result", &reading);
            let writing = inner("Result", &writing);
            let mtc = inner("Result", &mtc);
            xml.push_str(&format!("<StageAssessments><KeyStage><Stage>KS2</Stage>\
                <StageAssessment><Component>RD</Component>{reading}</StageAssessment>\
                <StageAssessment><Component>WRI</Component>{writing}</StageAssessment>\
                <StageAssessment><Component>MTC</Component>{mtc}</StageAssessment>\
                </KeyStage></StageAssessments>\n</Pupil>"));
            xml
        }
    }

    /// The property, for one pupil: a pupil that passes the reader and
    /// `check` is a `record.json` the receiving school's `baton check`
    /// accepts; one the record check refuses never passes; no message names
    /// the pupil. Returns whether the pupil passed.
    fn passes_and_round_trips(xml: &str) -> Result<bool, TestCaseError> {
        let mut pupil = CtfPupil::from_xml(xml, 1).unwrap();
        pupil.check(today());
        for p in &pupil.problems {
            prop_assert!(!p.to_string().contains("Secretname"), "{}", p);
        }
        if !pupil.record.problems(today()).is_empty() {
            prop_assert!(!pupil.problems.is_empty());
        }
        if !pupil.problems.is_empty() {
            return Ok(false);
        }
        let back = TransitionRecord::from_json(&pupil.record.to_json()).unwrap();
        prop_assert!(back == pupil.record);
        prop_assert_eq!(back.problems(today()), vec![]);
        Ok(true)
    }

    proptest! {
        #[test]
        fn every_ctf_pupil_that_passes_check_round_trips_through_record_json(xml in pupil_xml()) {
            passes_and_round_trips(&xml)?;
        }
    }

    /// The property is not vacuous: the generator makes pupils that pass
    /// and pupils that do not.
    #[test]
    fn the_generated_pupils_both_pass_and_fail() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut passed, mut failed) = (0, 0);
        for _ in 0..400 {
            let xml = pupil_xml().new_tree(&mut runner).unwrap().current();
            match passes_and_round_trips(&xml) {
                Ok(true) => passed += 1,
                Ok(false) => failed += 1,
                Err(e) => panic!("{e}: {xml}"),
            }
        }
        assert!(
            passed >= 20 && failed >= 20,
            "{passed} passed, {failed} failed"
        );
    }
}
